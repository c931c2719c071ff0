"""CUDA forget-mult kernels, compiled at run time through CuPy (NVRTC).

CuPy is imported only when a CUDA tensor asks for this backend, once per
process (``cupy_or_none``). Kernels are compiled once per (device, dtype),
their function objects looked up once per (device, dtype, kernel), and
launched on PyTorch's current stream. float16 / bfloat16 inputs are
computed in float32.

Which CuPy wheel: one per CUDA major, matching the CUDA that PyTorch was
built with (``torch.version.cuda``): the extras ``altsg-fairseq[cuda12]``
(cupy-cuda12x 13.x) and ``altsg-fairseq[cuda13]`` (cupy-cuda13x 14.x, which
needs numpy >= 2); ``install_hint()`` names the one for this PyTorch.
"""

import functools
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

SOURCE = (Path(__file__).parent / "kernels" / "forget_mult.cu").read_text()
THREADS = 256
# CUDA major -> (the package's extra, the CuPy wheel it installs); setup.py's extras
CUPY_FOR_CUDA = {
    "12": ("cuda12", "CuPy 13 for CUDA 12: cupy-cuda12x"),
    "13": ("cuda13", "CuPy 14 for CUDA 13: cupy-cuda13x, which needs numpy >= 2"),
}

_cupy = None  # the imported module, once it imported
_import_error: Optional[str] = None  # why it did not: "OSError: ..." (None: not tried, or no error)
_tried = False


def install_hint(cuda_version: Optional[str] = "torch") -> str:
    """What to install for the CUDA kernels, as one clause.

    cuda_version: the CUDA that PyTorch was built with, e.g. "12.8" or "13.0"
    (default: ``torch.version.cuda``; None: a CPU build of PyTorch).
    """
    if cuda_version == "torch":
        cuda_version = torch.version.cuda
    if not cuda_version:
        return (
            "this PyTorch has no CUDA (a CPU build): install a CUDA build of PyTorch, then "
            "pip install 'altsg-fairseq[cuda12]' or '[cuda13]' for its CUDA major"
        )
    major = cuda_version.split(".")[0]
    if major in CUPY_FOR_CUDA:
        extra, wheel = CUPY_FOR_CUDA[major]
        return f"pip install 'altsg-fairseq[{extra}]' ({wheel}; this PyTorch was built with CUDA {cuda_version})"
    return (
        f"this PyTorch was built with CUDA {cuda_version}, for which the package has no extra: "
        f"pip install the cupy-cuda{major}x wheel that matches it"
    )


def cupy_problem() -> str:
    """Why CuPy cannot be used, as one clause ("CuPy is not installed", or the
    error its import raised), for messages; call after ``cupy_or_none()``."""
    if _import_error is None:
        return "CuPy is not installed"
    return f"CuPy failed to import ({_import_error})"


def __getattr__(name):
    # INSTALL_HINT is read when CuPy could not be used: it quotes the import error, if any
    if name == "INSTALL_HINT":
        hint = install_hint()
        return f"{cupy_problem()}; {hint}" if _import_error else hint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_cache_dir() -> str:
    """Where CuPy keeps compiled kernels when CUPY_CACHE_DIR is not set."""
    return os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache")


def _can_create(path: str) -> bool:
    """Whether ``path`` is a writable folder, or could be made one (its nearest existing
    ancestor is a writable folder); nothing is created."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _choose_cache_dir() -> None:
    """Before CuPy is imported: when CUPY_CACHE_DIR is not set and CuPy's default
    cache (``~/.cupy/kernel_cache``) cannot be written (an unwritable or missing
    HOME), set CUPY_CACHE_DIR for this process to a new temporary folder, with
    one warning that says so. A CUPY_CACHE_DIR the user set is never changed."""
    if "CUPY_CACHE_DIR" in os.environ or _can_create(default_cache_dir()):
        return
    folder = tempfile.mkdtemp(prefix="altsg-cupy-cache-")
    os.environ["CUPY_CACHE_DIR"] = folder
    logger.warning(
        f"CuPy's kernel cache {default_cache_dir()} cannot be written: this process sets "
        f"CUPY_CACHE_DIR={folder} (compiled kernels are not kept after it); set CUPY_CACHE_DIR "
        f"to a writable folder to keep them"
    )


def cupy_or_none():
    """The ``cupy`` module, or None when it cannot be used here (not installed, or
    its import failed: any exception, e.g. OSError for a missing libnvrtc or an
    unwritable kernel cache; ``cupy_problem()`` says which). Imported once per
    process; the answer is remembered."""
    global _cupy, _import_error, _tried
    if _tried:
        return _cupy
    _tried = True
    _choose_cache_dir()
    try:
        import cupy
    except ImportError as e:
        if getattr(e, "name", None) != "cupy":  # installed, but something it needs is missing
            _import_error = f"{type(e).__name__}: {e}"
        return None
    except Exception as e:  # noqa: BLE001 - a broken CuPy must not stop the run: the caller falls back
        _import_error = f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and "CUPY_CACHE_DIR" in os.environ:
            _import_error += f" (CUPY_CACHE_DIR={os.environ['CUPY_CACHE_DIR']}: is it a writable folder?)"
        return None
    _cupy = cupy
    return cupy


def available() -> bool:
    """Whether the CUDA kernels can run: a CUDA GPU and a CuPy that imports."""
    return torch.cuda.is_available() and cupy_or_none() is not None


@functools.lru_cache(maxsize=None)
def _module(device_index: int, scalar: str):
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=SOURCE, options=("--std=c++11", f"-DSCALAR={scalar}"))
        module.compile()
    return module


@functools.lru_cache(maxsize=None)
def _function(device_index: int, scalar: str, name: str):
    """The kernel ``name`` of the module compiled for (device, scalar), looked up once."""
    return _module(device_index, scalar).get_function(name)


def _kernel(name: str, t: torch.Tensor):
    scalar = {torch.float32: "float", torch.float64: "double"}[t.dtype]
    return _function(t.device.index, scalar, name)


def chunk_length(T: int, N: int):
    """Chunk length L of the parallel scan, or None for the sequential kernel.

    The sequential kernel has only N threads; when N is small and T long the
    scan spreads the work over ceil(T / L) * N threads, with L near sqrt(T)
    to balance the per-chunk passes against the chain over chunks.
    """
    if N >= 16384 or T < 1024:
        return None
    return max(32, int(math.ceil(math.sqrt(T))))


def arguments(args) -> tuple:
    """A launch's arguments as the kernels take them: a tensor's device address as a
    numpy.uint64 (CuPy passes any 8-byte NumPy scalar as those 8 bytes: a pointer),
    an int as numpy.int32. No DLPack export: nothing is built per tensor but the
    number. Every tensor must be contiguous (the kernels index them densely) and on
    the device of the first; ``ValueError`` otherwise."""
    device = None
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            device = device or a.device
            if a.device != device or not a.is_contiguous():
                raise ValueError(
                    f"forget-mult kernel arguments must be contiguous tensors on {device}, "
                    f"got one of shape {tuple(a.shape)} strides {a.stride()} on {a.device}"
                )
            out.append(np.uint64(a.data_ptr()))
        else:
            out.append(np.int32(a))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _stream(device_index: int, pointer: int):
    """CuPy's handle on PyTorch's CUDA stream ``pointer`` (PyTorch keeps its streams for the
    process's lifetime, so one handle per stream serves every launch)."""
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.cuda.ExternalStream(pointer)


def _launch(name, count, t, *args):
    """Launch kernel ``name`` over ``count`` threads on PyTorch's current stream of t's device.
    The tensors stay alive in the caller until the launch is queued; the caching allocator
    hands their memory to later work on the same stream only, which runs after the kernel."""
    cupy = cupy_or_none()
    kernel = _kernel(name, t)
    stream = _stream(t.device.index, torch.cuda.current_stream(t.device).cuda_stream)
    with cupy.cuda.Device(t.device.index), stream:
        kernel(((count + THREADS - 1) // THREADS,), (THREADS,), arguments(args))


def _scan_buffers(T: int, N: int, L: int, device):
    """K chunks and three (K, N) float64 buffers: the chunk maps A, B and the chained states."""
    K = (T + L - 1) // L
    A = torch.empty(K, N, dtype=torch.float64, device=device)
    return K, A, torch.empty_like(A), torch.empty_like(A)


def forward(f: torch.Tensor, x: torch.Tensor, h0: torch.Tensor, chunk=None) -> torch.Tensor:
    """f, x: (T, N) contiguous; h0: (N,). Returns c: (T, N)."""
    T, N = f.shape
    c = torch.empty_like(f)
    L = chunk_length(T, N) if chunk is None else chunk
    if not L:
        _launch("fm_seq_forward", N, f, f, x, h0, c, T, N)
        return c
    K, A, B, start = _scan_buffers(T, N, L, f.device)
    _launch("fm_chunk_forward_summary", K * N, f, f, x, A, B, T, N, L, K)
    _launch("fm_chunk_forward_chain", N, f, h0, A, B, start, K, N)
    _launch("fm_chunk_forward_replay", K * N, f, f, x, start, c, T, N, L, K)
    return c


def backward(f, x, h0, c, grad_c, chunk=None):
    """Returns (grad_f, grad_x, grad_h0) for (T, N) inputs."""
    T, N = f.shape
    grad_f, grad_x, grad_h0 = torch.empty_like(f), torch.empty_like(x), torch.empty_like(h0)
    L = chunk_length(T, N) if chunk is None else chunk
    if not L:
        _launch("fm_seq_backward", N, f, f, x, h0, c, grad_c, grad_f, grad_x, grad_h0, T, N)
        return grad_f, grad_x, grad_h0
    K, A, B, carry_in = _scan_buffers(T, N, L, f.device)
    _launch("fm_chunk_backward_summary", K * N, f, f, grad_c, A, B, T, N, L, K)
    _launch("fm_chunk_backward_chain", N, f, A, B, carry_in, grad_h0, K, N)
    _launch("fm_chunk_backward_replay", K * N, f, f, x, h0, c, grad_c, carry_in, grad_f, grad_x, T, N, L, K)
    return grad_f, grad_x, grad_h0
