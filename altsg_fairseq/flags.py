"""Flag helpers shared by the plugin's fairseq components (task, lr scheduler)."""

import importlib.util
import os
from typing import Callable, Iterable

from .errors import UsageError


def epochs_as_lists(parser, names: Iterable[str]) -> None:
    """Let list-of-epochs flags take space-separated values (--restart-base 160 320).

    fairseq turns a dataclass ``List[int]`` field into a flag that takes one
    comma-separated string; alternate_sg's flags take several values.
    """
    names = set(names)
    for action in parser._actions:
        if action.dest in names:
            action.nargs, action.type, action.default = "*", int, []


def checked(check: Callable, *args, **kwargs):
    """Call ``check``; its ``ValueError`` becomes the one-line ``UsageError``."""
    try:
        return check(*args, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def refuse_xla_without_torch_xla(flags: str) -> None:
    """One line for fairseq's --tpu where torch_xla is missing.

    fairseq turns --bf16 (and --memory-efficient-bf16, which sets it) into
    --tpu: an XLA device, no Slurm/torchrun detection, and with several
    processes torch_xla's spawn (fairseq#4696); without torch_xla that is a
    traceback, on CPUs and GPUs alike. ``flags`` names what the user gave."""
    if importlib.util.find_spec("torch_xla") is None:
        raise UsageError(
            f"{flags} make fairseq run on an XLA (TPU) device, which needs torch_xla: for mixed "
            f"precision use --amp instead (bfloat16 autocast on a CPU, float16 on a GPU)"
        )


def refuse_hydra_train() -> None:
    """One line where fairseq-hydra-train imports the plugin: hydra composes fairseq's configs
    before fairseq imports a --user-dir, so the plugin's task, model and criterion configs cannot
    take part, and the run would fail deep in omegaconf (or train fairseq's defaults)."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if os.path.basename(sys.argv[0] if sys.argv else "") == "fairseq-hydra-train" or (
        spec is not None and spec.name == "fairseq_cli.hydra_train"
    ):
        raise UsageError(
            "fairseq-hydra-train cannot run altsg_fairseq (hydra builds fairseq's configs before it imports "
            "a --user-dir): use fairseq-train with the same settings as flags (docs/flags.md, docs/cluster.md)"
        )
