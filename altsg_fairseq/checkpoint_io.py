"""Safer checkpoint files for fairseq, installed when the plugin is imported.

1. fairseq writes the first file of a save atomically (a temporary file, then
   a rename) but copies it to the others (``checkpoint_last.pt``,
   ``checkpoint_best.pt``) in place, so a kill during the copy leaves a
   truncated file. Local copies are made atomic here: copy to a temporary file
   beside the target, then ``os.replace``.
2. A checkpoint file that cannot be read (truncated, or not a checkpoint)
   ends the run with one clear line instead of a traceback.
"""

import os
import pickle
import shutil
import tempfile
import zipfile

import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from .errors import UsageError

_fairseq_copy = PathManager.copy
_fairseq_load = checkpoint_utils.load_checkpoint_to_cpu


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """``PathManager.copy`` whose target is never seen half-written (local files)."""
    if PathManager.path_requires_pathmanager(src_path) or PathManager.path_requires_pathmanager(dst_path):
        return _fairseq_copy(src_path, dst_path, overwrite=overwrite)
    if os.path.exists(dst_path) and not overwrite:
        return False
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst_path)),
                               prefix=os.path.basename(dst_path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, dst_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    try:
        return _fairseq_load(path, arg_overrides, load_on_all_ranks)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); "
                         f"it is truncated or not a checkpoint: use another one (e.g. checkpoint_best.pt)") from None
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e) and "zip archive" not in str(e):
            raise
        raise UsageError(f"cannot read checkpoint {path} ({str(e)[:200]}); "
                         f"it is truncated or not a checkpoint: use another one (e.g. checkpoint_best.pt)") from None


def install() -> None:
    PathManager.copy = staticmethod(atomic_copy)
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


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
