"""CUDA forget-mult kernels, compiled at run time through CuPy (NVRTC).

CuPy is imported only when a CUDA tensor asks for this backend. Kernels are
compiled once per (device, dtype) and launched on PyTorch's current stream.
float16 / bfloat16 inputs are computed in float32.
"""

import functools
import math
from pathlib import Path

import torch

SOURCE = (Path(__file__).parent / "kernels" / "forget_mult.cu").read_text()
THREADS = 256
INSTALL_HINT = "pip install 'altsg-fairseq[cuda]' (CuPy 13 for CUDA 12: cupy-cuda12x)"


def cupy_or_none():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def available() -> bool:
    return torch.cuda.is_available() and cupy_or_none() is not None


@functools.lru_cache(maxsize=None)
def _module(device_index: int, scalar: str):
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=SOURCE, options=("--std=c++11", f"-DSCALAR={scalar}"))
        module.compile()
    return module


def _kernel(name: str, t: torch.Tensor):
    scalar = {torch.float32: "float", torch.float64: "double"}[t.dtype]
    return _module(t.device.index, scalar).get_function(name)


def chunk_length(T: int, N: int):
    """Chunk length L of the parallel scan, or None for the sequential kernel.

    The sequential kernel has only N threads; when N is small and T long the
    scan spreads the work over ceil(T / L) * N threads, with L near sqrt(T)
    to balance the per-chunk passes against the chain over chunks.
    """
    if N >= 16384 or T < 1024:
        return None
    return max(32, int(math.ceil(math.sqrt(T))))


def _launch(name, count, t, *args):
    import cupy

    def arg(a):
        if isinstance(a, torch.Tensor):
            return cupy.from_dlpack(a.detach())
        return cupy.int32(a)

    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(t.device).cuda_stream)
    with cupy.cuda.Device(t.device.index), stream:
        _kernel(name, t)(((count + THREADS - 1) // THREADS,), (THREADS,), tuple(arg(a) for a in args))


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
