"""How the CUDA backend treats a CuPy that cannot be used, emulated on a CPU: a fake
``cupy`` package first on sys.path, which fails at import as the real one does
under an unwritable HOME (OSError from its kernel cache) or without the CUDA
libraries it was built for (ImportError naming libnvrtc)."""

import logging
import os
import sys

import pytest

from altsg_fairseq.modules import forget_mult_cuda as m

# the fake's import: create the kernel cache where CuPy would (CUPY_CACHE_DIR, else ~/.cupy/kernel_cache)
CACHE_AT_IMPORT = """
import os
os.makedirs(os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser("~/.cupy/kernel_cache"), exist_ok=True)
"""
MISSING_LIBRARY = """
raise ImportError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object file")
"""


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """This process as if CuPy had never been looked for; returns install(fake source or None, home)."""
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)  # restored (unset) after the test, whatever the code set
    for name, value in [("_cupy", None), ("_import_error", None), ("_tried", False)]:
        monkeypatch.setattr(m, name, value)
    monkeypatch.delitem(sys.modules, "cupy", raising=False)

    def install(fake, home):
        if fake is not None:
            (tmp_path / "fake" / "cupy").mkdir(parents=True)
            (tmp_path / "fake" / "cupy" / "__init__.py").write_text(fake)
            monkeypatch.syspath_prepend(str(tmp_path / "fake"))
        monkeypatch.setenv("HOME", str(home))

    yield install
    sys.modules.pop("cupy", None)  # the fake must not outlive the test


@pytest.fixture
def unwritable_home(tmp_path):
    """A HOME nothing can be created in, even by root: a path below a regular file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "home"


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unwritable_home_gets_a_temporary_cache_and_one_warning(fresh, unwritable_home, caplog):
    fresh(CACHE_AT_IMPORT, unwritable_home)
    with caplog.at_level(logging.WARNING):
        first, second = m.cupy_or_none(), m.cupy_or_none()
    assert first is not None and first is second  # imported once
    cache = os.environ["CUPY_CACHE_DIR"]
    assert os.path.isdir(cache) and os.access(cache, os.W_OK)
    said = warnings_of(caplog)
    assert len(said) == 1 and f"CUPY_CACHE_DIR={cache}" in said[0] and "cannot be written" in said[0]


def test_a_writable_home_changes_nothing(fresh, tmp_path, caplog):
    fresh(CACHE_AT_IMPORT, tmp_path / "home")
    with caplog.at_level(logging.WARNING):
        assert m.cupy_or_none() is not None
    assert "CUPY_CACHE_DIR" not in os.environ and warnings_of(caplog) == []
    assert (tmp_path / "home" / ".cupy" / "kernel_cache").is_dir()  # the fake made it where CuPy would


def test_the_users_cache_dir_is_never_changed_and_its_error_is_quoted(
    fresh, tmp_path, unwritable_home, monkeypatch, caplog
):
    bad = str(unwritable_home / "cache")
    fresh(CACHE_AT_IMPORT, tmp_path)
    monkeypatch.setenv("CUPY_CACHE_DIR", bad)
    with caplog.at_level(logging.WARNING):
        assert m.cupy_or_none() is None and not m.available()
    assert os.environ["CUPY_CACHE_DIR"] == bad and warnings_of(caplog) == []
    assert m.cupy_problem().startswith("CuPy failed to import (NotADirectoryError:")
    assert f"CUPY_CACHE_DIR={bad}" in m.cupy_problem() and m.INSTALL_HINT.startswith(m.cupy_problem() + "; ")


def test_a_broken_cupy_is_not_called_missing(fresh, tmp_path):
    fresh(MISSING_LIBRARY, tmp_path)
    assert m.cupy_or_none() is None
    assert m.cupy_problem() == (
        "CuPy failed to import (ImportError: CuPy failed to load libnvrtc.so.12: "
        "OSError: libnvrtc.so.12: cannot open shared object file)"
    )
    assert m.INSTALL_HINT == f"{m.cupy_problem()}; {m.install_hint()}"  # the real error, then what to install


def test_no_cupy_is_not_installed(fresh, tmp_path):
    fresh(None, tmp_path)
    assert m.cupy_or_none() is None
    assert m.cupy_problem() == "CuPy is not installed" and m.INSTALL_HINT == m.install_hint()


# a stand-in that counts what the backend asks of CuPy when it looks kernels up
COUNTING = """
import contextlib
calls = {"compile": 0, "get_function": 0}

class RawModule:
    def __init__(self, code, options):
        self.options = options
    def compile(self):
        calls["compile"] += 1
    def get_function(self, name):
        calls["get_function"] += 1
        return (name, self.options)

class cuda:
    Device = staticmethod(lambda index: contextlib.nullcontext())
"""


def test_kernels_are_compiled_once_and_looked_up_once(fresh, tmp_path):
    import torch

    fresh(COUNTING, tmp_path)
    cupy = m.cupy_or_none()
    m._module.cache_clear(), m._function.cache_clear()
    try:
        t32, t64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
        for _ in range(5):  # five launches of each kernel in each dtype
            for name in ("fm_seq_forward", "fm_seq_backward"):
                assert m._kernel(name, t32) == (name, ("--std=c++11", "-DSCALAR=float"))
                assert m._kernel(name, t64)[1] == ("--std=c++11", "-DSCALAR=double")
        assert cupy.calls == {"compile": 2, "get_function": 4}  # per dtype; per dtype and kernel
    finally:
        m._module.cache_clear(), m._function.cache_clear()
