"""How the plugin replaces a fairseq function: the replacement in place, fairseq's own kept, and back.

``fairseq_patches`` lists every replacement and why fairseq needs it; this
module only holds the mechanics.
"""

import importlib
import inspect
from contextlib import contextmanager
from typing import Any, NamedTuple, Tuple

ORIGINALS = {}  # (id of the holder, name) -> fairseq's own function, while a replacement is in place


class Patch(NamedTuple):
    owner: Any  # the fairseq module or class that holds the function, or a module's name (imported when needed)
    name: str
    replacement: Any
    parameters: Tuple[str, ...]  # fairseq's parameters, as the replacement calls it
    why: str

    @property
    def holder(self):
        """The module or class that holds the function."""
        return importlib.import_module(self.owner) if isinstance(self.owner, str) else self.owner

    @property
    def original(self):
        """fairseq's own function (the one the replacement calls)."""
        if self.installed():
            return ORIGINALS[(id(self.holder), self.name)]
        value = inspect.getattr_static(self.holder, self.name)
        return value.__func__ if isinstance(value, staticmethod) else value

    def installed(self) -> bool:
        current = inspect.getattr_static(self.holder, self.name)
        current = current.__func__ if isinstance(current, staticmethod) else current
        return current is self.replacement

    def put(self) -> None:
        """Put the replacement in place (nothing if it is)."""
        if self.installed():
            return
        ORIGINALS[(id(self.holder), self.name)] = self.original
        value = staticmethod(self.replacement) if inspect.isclass(self.holder) else self.replacement
        setattr(self.holder, self.name, value)

    def take_back(self) -> None:
        """Put fairseq's own function back (nothing if it is)."""
        if self.installed():
            setattr(self.holder, self.name, ORIGINALS.pop((id(self.holder), self.name)))


@contextmanager
def in_place(patches):
    """``patches`` in place for the ``with`` block; fairseq's own functions back after it."""
    for patch in patches:
        patch.put()
    try:
        yield
    finally:
        for patch in patches:
            patch.take_back()
