"""Every fairseq function the plugin replaces: what it adds, why fairseq needs it.

Importing the plugin (``--user-dir altsg_fairseq``) calls ``install()``. Each
replacement calls fairseq's own function (kept as ``Patch.original``) and adds
one thing; ``tests/unit/test_fairseq_patches.py`` checks that each function
still exists in fairseq with the parameters the replacement passes on, so that
a fairseq upgrade that renames or reshapes one fails loudly, not late. fairseq
offers no hook for any of these (its ``Trainer`` and ``checkpoint_utils``
call module-level functions directly).
"""

import inspect
from typing import Any, NamedTuple, Tuple

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from . import checkpoint_io, distributed


class Patch(NamedTuple):
    owner: Any  # the fairseq module or class that holds the function
    name: str
    replacement: Any
    parameters: Tuple[str, ...]  # fairseq's parameters, as the replacement calls it
    why: str

    @property
    def original(self):
        """fairseq's own function (the one the replacement calls)."""
        if self.installed():
            return ORIGINALS[(id(self.owner), self.name)]
        value = inspect.getattr_static(self.owner, self.name)
        return value.__func__ if isinstance(value, staticmethod) else value

    def installed(self) -> bool:
        current = inspect.getattr_static(self.owner, self.name)
        current = current.__func__ if isinstance(current, staticmethod) else current
        return current is self.replacement


PATCHES = (
    Patch(
        PathManager,
        "copy",
        checkpoint_io.atomic_copy,
        ("src_path", "dst_path", "overwrite"),
        "fairseq copies checkpoint_last.pt/checkpoint_best.pt in place: a kill mid-copy leaves a truncated file; "
        "the copy goes to a temporary file, then os.replace",
    ),
    Patch(
        checkpoint_utils,
        "load_checkpoint_to_cpu",
        checkpoint_io.load_checkpoint_to_cpu,
        ("path", "arg_overrides", "load_on_all_ranks"),
        "a truncated or foreign checkpoint file: one line instead of a traceback",
    ),
    Patch(
        checkpoint_utils,
        "save_checkpoint",
        checkpoint_io.save_checkpoint,
        ("cfg", "trainer", "epoch_itr", "val_loss"),
        "every worker hands the run state its rows' carried state before fairseq writes the file on one worker",
    ),
    Patch(
        checkpoint_utils,
        "load_checkpoint",
        checkpoint_io.load_checkpoint,
        ("cfg", "trainer", "passthrough_args"),
        "fairseq-train's resume: a --restore-file that names no file is one line (fairseq would start afresh); "
        "the run state knows it is resuming (flags compared, curves kept apart)",
    ),
    Patch(
        checkpoint_utils,
        "load_model_ensemble_and_task",
        checkpoint_io.load_model_ensemble_and_task,
        ("filenames", "arg_overrides", "task", "strict", "suffix", "num_shards", "state"),
        "a --path that names no file: one line instead of a traceback",
    ),
    Patch(
        checkpoint_utils,
        "verify_checkpoint_directory",
        checkpoint_io.verify_checkpoint_directory,
        ("save_dir",),
        "a --save-dir that cannot be written: one line instead of a traceback",
    ),
    Patch(
        distributed_utils,
        "broadcast_object",
        checkpoint_io.broadcast_object,
        ("obj", "src_rank", "group", "dist_device"),
        "workers receive the loaded checkpoint through torch.load: under PyTorch's safe loading, exactly the "
        "checkpoint's types allowed, never with the safety off",
    ),
    Patch(
        distributed_utils,
        "infer_init_method",
        distributed.infer_init_method,
        ("cfg", "force_distributed"),
        "torchrun on machines without GPUs (one gloo worker per process), and --bf16/--tpu without torch_xla "
        "refused before fairseq spawns XLA processes",
    ),
)

ORIGINALS = {}


def install() -> None:
    """Put every replacement in place (once; a second call changes nothing)."""
    for patch in PATCHES:
        if patch.installed():
            continue
        ORIGINALS[(id(patch.owner), patch.name)] = patch.original
        value = staticmethod(patch.replacement) if inspect.isclass(patch.owner) else patch.replacement
        setattr(patch.owner, patch.name, value)
