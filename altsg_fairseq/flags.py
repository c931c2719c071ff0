"""Flag helpers shared by the plugin's fairseq components (task, lr scheduler)."""

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
