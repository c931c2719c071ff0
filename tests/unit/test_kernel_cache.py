"""The CPU kernels' numba disk cache fails soft (modules/kernel_cache.py): a cache folder that cannot be
written, a read-only install without a usable home, a cache file cut short. Each case runs in fresh
interpreters (numba picks its cache when the module is imported) on a copy of altsg_fairseq/modules,
whose kernels must equal the plain PyTorch loop. A folder under a regular file stands for one that
cannot be written: chmod does not stop root, which CI runs as."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO

PROBE = r"""
import json, os, sys, tempfile
if sys.argv[2]:
    tempfile.tempdir = sys.argv[2]  # the temporary directory cannot be written either
sys.path.insert(0, sys.argv[1])
import torch
from kern.forget_mult import forget_mult, forget_mult_reference
from kern import forget_mult_cpu

g = torch.Generator().manual_seed(0)
f, x = torch.rand(9, 2, 300, generator=g), torch.randn(9, 2, 300, generator=g)
h0, grad = torch.randn(2, 300, generator=g), torch.randn(9, 2, 300, generator=g)
results = []
for backend in ("cpu", "reference"):
    inputs = [t.clone().requires_grad_() for t in (f, x, h0)]
    c = forget_mult(*inputs, backend=backend) if backend == "cpu" else forget_mult_reference(*inputs)
    results.append([c, *torch.autograd.grad(c, inputs, grad)])
for a, b in zip(*results):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
kernels = (forget_mult_cpu.forget_mult_forward, forget_mult_cpu.forget_mult_backward)
print(json.dumps({
    "cache": [k.stats.cache_path for k in kernels],
    "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
    "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
    "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR"),
}))
"""


@pytest.fixture
def install(tmp_path):
    """A copy of altsg_fairseq/modules as the package ``kern``, and a regular file to put folders under."""
    shutil.copytree(
        REPO / "altsg_fairseq" / "modules", tmp_path / "site" / "kern", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "a-file").write_text("")
    return tmp_path


def probe(root, env, tempdir=""):
    """The kernels in a fresh interpreter: (what it printed, its stderr); they equal the reference loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))} | env
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(root / "site"), tempdir],
        capture_output=True,
        text=True,
        env=dict(env, PYTHONWARNINGS="default"),
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def warnings_in(stderr):
    return [line for line in stderr.splitlines() if "KernelCacheWarning" in line]


def test_an_unwritable_cache_dir_on_a_read_only_install_without_a_home(install):
    """numba: RuntimeError: cannot cache function (no folder can be written); here the kernels are cached
    in a private temporary folder, with one warning, and the next process reads them from it."""
    (install / "site" / "kern" / "__pycache__").write_text("")  # the install's cache folder cannot be made
    (install / "tmp").mkdir()
    unwritable = str(install / "a-file" / "cache")
    env = {"NUMBA_CACHE_DIR": unwritable, "HOME": str(install / "a-file" / "home"), "TMPDIR": str(install / "tmp")}
    first, stderr = probe(install, env)
    (warning,) = warnings_in(stderr)
    assert f"NUMBA_CACHE_DIR={unwritable} cannot be written (NotADirectoryError" in warning
    private = str(install / "tmp" / f"altsg-numba-cache-{os.getuid()}")
    assert all(path.startswith(private) for path in first["cache"]) and f"cached in {first['cache'][0]}" in warning
    assert first["misses"] > 0 and first["hits"] == 0 and first["NUMBA_CACHE_DIR"] == unwritable
    second, stderr = probe(install, env)
    assert len(warnings_in(stderr)) == 1 and second["cache"] == first["cache"]
    assert second["hits"] == first["misses"] and second["misses"] == 0


@pytest.mark.slow  # the default suite keeps the unwritable install's fallback
def test_no_folder_at_all_compiles_without_a_cache(install):
    (install / "site" / "kern" / "__pycache__").write_text("")
    env = {"NUMBA_CACHE_DIR": str(install / "a-file" / "cache"), "HOME": str(install / "a-file" / "home")}
    result, stderr = probe(install, env, tempdir=str(install / "a-file" / "tmp"))
    (warning,) = warnings_in(stderr)
    assert "no folder can hold the compiled CPU kernels' cache" in warning and "set NUMBA_CACHE_DIR" in warning
    assert result["cache"] == [None, None] and result["misses"] > 0


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """A cache folder as a first process leaves it."""
    root = tmp_path_factory.mktemp("kernel-cache")
    shutil.copytree(
        REPO / "altsg_fairseq" / "modules", root / "site" / "kern", ignore=shutil.ignore_patterns("__pycache__")
    )
    result, stderr = probe(root, {"NUMBA_CACHE_DIR": str(root / "cache")})
    assert not warnings_in(stderr) and result["misses"] > 0 and result["hits"] == 0
    return root


@pytest.mark.slow  # the default suite keeps the unwritable install's fallback
@pytest.mark.parametrize(
    "files,keep", [("*.nbi", 0), ("*.nbi", 0.5), ("*.nbc", 0.5)], ids=["index-empty", "index-cut", "data-cut"]
)
def test_a_cache_file_cut_short_is_compiled_again_and_rewritten(filled_cache, tmp_path, files, keep):
    """numba: EOFError / UnpicklingError from the cache in every later process; here one warning, the
    kernels compiled again, and the cache rewritten (the next process reads it)."""
    shutil.copytree(filled_cache / "cache", tmp_path / "cache")  # (the same install: numba's key holds its path)
    cut = sorted((tmp_path / "cache").rglob(files))
    assert len(cut) >= 2  # both kernels'
    for path in cut:
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    again, stderr = probe(filled_cache, env)
    (warning,) = warnings_in(stderr)
    assert "could not be read (" in warning and "compiling them again and rewriting it" in warning
    assert again["misses"] > 0
    fine, stderr = probe(filled_cache, env)
    assert not warnings_in(stderr) and fine["hits"] == again["misses"] and fine["misses"] == 0
