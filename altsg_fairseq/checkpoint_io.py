"""Safer checkpoint files for fairseq: the replacements ``fairseq_patches`` installs.

1. fairseq writes the first file of a save atomically (a temporary file, then
   a rename) but copies it to the others (``checkpoint_last.pt``,
   ``checkpoint_best.pt``) in place, so a kill during the copy leaves a
   truncated file. Local copies are made atomic here: copy to a temporary file
   beside the target, then ``os.replace``.
   The copy keeps the source's permissions (fairseq's own files are 0644).
2. A checkpoint file that cannot be read (truncated, or not a checkpoint)
   ends the run with one clear line instead of a traceback.
3. With several workers, the first loads a checkpoint and fairseq sends its
   contents to the others through ``torch.save``/``torch.load``; that load
   runs under PyTorch's default safe unpickler with exactly the types those
   contents hold allowed (``BROADCAST_TYPES``), never with the safety off.
4. Before a save, every worker hands the run state (``task.run_state``, the
   ``TrainingState``) the part it holds (its rows' carried state): fairseq
   writes the checkpoint on one worker, and ``save_checkpoint`` is the one
   call every worker makes first. fairseq-train's resume runs inside
   ``run_state.resuming()``, so that the run state compares the run's flags
   with the checkpoint's.
5. A checkpoint path that names no file (``--restore-file``,
   ``--finetune-from-model``, ``--path``) or a ``--save-dir`` that cannot be
   written ends the run with one clear line; fairseq would start a named
   ``--restore-file`` afresh without a word, or trace back.
"""

import collections
import logging
import os
import pickle
import shutil
import tempfile
import typing
import zipfile
from contextlib import nullcontext

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from omegaconf import DictConfig, ListConfig, base, nodes

from .distributed import world_size
from .errors import AgreedStop, UsageError

logger = logging.getLogger(__name__)

_fairseq_copy = PathManager.copy
_fairseq_load = checkpoint_utils.load_checkpoint_to_cpu
_fairseq_broadcast = distributed_utils.broadcast_object
_fairseq_save = checkpoint_utils.save_checkpoint
_fairseq_resume = checkpoint_utils.load_checkpoint
_fairseq_load_models = checkpoint_utils.load_model_ensemble_and_task
_fairseq_verify_save_dir = checkpoint_utils.verify_checkpoint_directory

# what a loaded fairseq checkpoint holds besides tensors and plain containers:
# its config as omegaconf objects (whose metadata names builtin types), and
# the placeholders fairseq puts where the tensors were before a broadcast
BROADCAST_TYPES = [
    DictConfig,
    ListConfig,
    base.ContainerMetadata,
    base.Metadata,
    typing.Any,
    collections.defaultdict,
    dict,
    list,
    tuple,
    int,
    float,
    str,
    bool,
    distributed_utils._TensorPlaceholder,
    *(
        getattr(nodes, name)
        for name in (
            "AnyNode",
            "StringNode",
            "IntegerNode",
            "FloatNode",
            "BooleanNode",
            "EnumNode",
            "BytesNode",
            "PathNode",
        )
        if hasattr(nodes, name)
    ),
]


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """``PathManager.copy`` whose target is never seen half-written (local files)."""
    if PathManager.path_requires_pathmanager(src_path) or PathManager.path_requires_pathmanager(dst_path):
        return _fairseq_copy(src_path, dst_path, overwrite=overwrite)
    if os.path.exists(dst_path) and not overwrite:
        return False
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(dst_path)), prefix=os.path.basename(dst_path) + ".", suffix=".tmp"
    )
    os.close(fd)
    try:
        shutil.copyfile(src_path, tmp)
        shutil.copymode(src_path, tmp)  # mkstemp made it 0600
        os.replace(tmp, dst_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


UNREADABLE = "altsg_fairseq: unreadable checkpoint"  # the key of what the first worker sends in its place
_resuming = {"on": False}  # fairseq-train's resume under way: there the first worker loads alone and sends


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's load; a file that cannot be read is one line. With several workers, where the first
    loads alone and sends the contents to the others (``broadcast_object``), it sends that line in
    their place, so that every worker stops with it (not the first alone, the others in gloo)."""
    try:
        return _fairseq_load(path, arg_overrides, load_on_all_ranks)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, RuntimeError) as e:
        if isinstance(e, FileNotFoundError) or (
            isinstance(e, RuntimeError) and "PytorchStreamReader" not in str(e) and "zip archive" not in str(e)
        ):
            raise
        error = UsageError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); "
            f"it is truncated or not a checkpoint: use another one (e.g. checkpoint_best.pt)"
        )
    if load_on_all_ranks or not _resuming["on"] or world_size() == 1:
        raise error from None
    return {UNREADABLE: error.message}


def broadcast_object(obj, src_rank, group, dist_device=None):
    """fairseq's broadcast of a Python object, its load allowing exactly ``BROADCAST_TYPES``; a
    checkpoint the first worker could not read stops every worker with its line."""
    with torch.serialization.safe_globals(BROADCAST_TYPES):
        obj = _fairseq_broadcast(obj, src_rank, group, dist_device)
    if isinstance(obj, dict) and UNREADABLE in obj:
        raise AgreedStop(obj[UNREADABLE])  # every worker, the first included, got this line
    return obj


def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
    """fairseq's save, after every worker has handed the task its part of the training state."""
    run_state = getattr(trainer.task, "run_state", None)
    if not cfg.no_save and run_state is not None:
        run_state.gather()
    return _fairseq_save(cfg, trainer, epoch_itr, val_loss)


def load_checkpoint(cfg, trainer, **passthrough_args):
    """fairseq-train's resume; the task knows it is resuming while it runs
    (fairseq's evaluation tools load the same model state, and must not compare flags)."""
    if cfg.restore_file != "checkpoint_last.pt" and not PathManager.isfile(cfg.restore_file):
        raise UsageError(
            f"--restore-file {cfg.restore_file}: no such file (fairseq would train from scratch); "
            f"leave it out to resume from --save-dir's checkpoint_last.pt"
        )
    run_state = getattr(trainer.task, "run_state", None)
    _resuming["on"] = True
    try:
        with run_state.resuming(cfg.reset_optimizer) if run_state is not None else nullcontext():
            extra_state, epoch_itr = _fairseq_resume(cfg, trainer, **passthrough_args)
    except ValueError as e:
        if "--finetune-from-model" not in str(e):
            raise
        hint = ": give the checkpoint file to start from" if "does not exist" in str(e) else ""
        raise UsageError(f"{e}{hint}") from None
    except AssertionError as e:
        # fairseq's own check of the optimizer and criterion; the run state refuses a change before (its
        # checkpoints name them), this is for checkpoints that do not
        if "please reset the optimizer (--reset-optimizer)" not in str(e):
            raise
        raise UsageError(
            f"the checkpoint's optimizer state does not fit this run ({str(e).split('. ')[-1]}); pass "
            f"--reset-optimizer to continue with the new one's fresh state, or resume with the checkpoint's flags"
        ) from None
    finally:
        _resuming["on"] = False
    if extra_state is not None:
        stop_if_complete(trainer, epoch_itr, cfg.save_dir)
    return extra_state, epoch_itr


def stop_if_complete(trainer, epoch_itr, save_dir: str) -> None:
    """A resumed run that this command's --max-update or --max-epoch has already reached: one line
    and exit status 0, before anything is trained or written (fairseq would train one more update
    and overwrite checkpoint_last.pt). Raising either flag continues the run."""
    limits = trainer.cfg.optimization
    updates, epoch = trainer.get_num_updates(), epoch_itr.next_epoch_idx - 1
    reached = []
    if limits.max_update and updates >= limits.max_update:
        reached.append(f"update {updates:,} of --max-update {limits.max_update:,}")
    if limits.max_epoch and epoch >= limits.max_epoch:
        reached.append(f"epoch {epoch} of --max-epoch {limits.max_epoch}")
    if reached:
        logger.info(
            f"the run in {save_dir} is complete ({' and '.join(reached)}): nothing to do; "
            f"raise --max-update or --max-epoch to continue it"
        )
        raise SystemExit(0)


def load_model_ensemble_and_task(filenames, *args, **kwargs):
    """fairseq's model loading (eval-lm, interactive, the hub interface), one line for a missing file."""
    for filename in filenames:
        if not PathManager.exists(filename):
            raise UsageError(
                f"--path {filename}: no such checkpoint file (fairseq-train writes "
                f"<save-dir>/checkpoint_best.pt and checkpoint_last.pt)"
            )
    return _fairseq_load_models(filenames, *args, **kwargs)


def verify_checkpoint_directory(save_dir: str) -> None:
    try:
        _fairseq_verify_save_dir(save_dir)
    except OSError as e:
        raise UsageError(
            f"cannot write checkpoints to --save-dir {save_dir} ({e.strerror or e}): choose a folder you can write to"
        ) from None


def read_extra_state(path: str, flag: str) -> dict:
    """The model's extra state (what the task keeps besides the weights) of the
    checkpoint at ``path``, named by ``flag``; one clear line when unreadable."""
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:  # a truncated or foreign file
        raise UsageError(f"{flag} {path}: cannot read it as a checkpoint ({type(e).__name__}: {e})") from None
    return state.get("model", {}).get("_extra_state") or {}


def copy_dictionary(dict_path: str, save_dir: str) -> None:
    """Put the training dictionary beside the checkpoints (as <save-dir>/dict.txt), so that the
    save dir alone serves the hub interface and scripts/score_text.py; atomically, once."""
    target = os.path.join(save_dir, "dict.txt")
    if not os.path.isfile(dict_path) or (
        os.path.isfile(target) and open(target, "rb").read() == open(dict_path, "rb").read()
    ):
        return
    os.makedirs(save_dir, exist_ok=True)
    atomic_copy(dict_path, target, overwrite=True)
