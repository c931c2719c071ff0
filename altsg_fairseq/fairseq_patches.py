"""Every fairseq function the plugin replaces: what it adds, why fairseq needs it.

Importing the plugin (``--user-dir altsg_fairseq``) calls ``install()``, which
puts ``PATCHES`` in place. ``RUN_PATCHES`` replace functions of the modules of
fairseq-train and fairseq-eval-lm, which only those tools import (importing one
sets up logging for the whole process): they are in place only while a run of the
plugin's task, or a fairseq-eval-lm run, runs (``patching.in_place``; each
list beside the run it serves, and named here). Each
replacement calls fairseq's own function (``Patch.original``) and adds one
thing; ``tests/registry/test_fairseq_patches.py`` checks that each function
still exists in fairseq with the parameters the replacement passes on, so that
a fairseq upgrade that renames or reshapes one fails loudly, not late. fairseq
offers no hook for any of these (its ``Trainer``, ``checkpoint_utils`` and
``fairseq_cli.train`` call module-level functions directly).
"""

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from . import checkpoint_io, distributed, training_run
from .tasks import evaluation
from .patching import Patch

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
        "a truncated or foreign checkpoint file: one line instead of a traceback, sent to every worker where "
        "the first loads alone",
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
        "the run state knows it is resuming (flags compared, curves kept apart); a finished run does nothing",
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
        "torchrun and srun on machines without GPUs (one gloo worker per process), launches that cannot work "
        "there refused in one line, and --bf16/--tpu without torch_xla refused before fairseq spawns XLA processes",
    ),
    Patch(
        distributed_utils,
        "call_main",
        training_run.call_main,
        ("cfg", "main", "kwargs"),
        "fairseq-train with the plugin's task runs each worker's main inside a TrainingRun (stop signals noted "
        "and agreed on, a peer that stopped reported in one line), fairseq-eval-lm sums over its processes, and an "
        "init method fairseq would start no process for on a CPU is one line",
    ),
)

# in place only while a fairseq-train or fairseq-eval-lm run of the plugin's task runs
RUN_PATCHES = training_run.RUN_PATCHES + evaluation.RUN_PATCHES


def install() -> None:
    """Put every replacement of ``PATCHES`` in place (once; a second call changes nothing)."""
    for patch in PATCHES:
        patch.put()
