"""Compiled CPU forget-mult kernels (numba), run on PyTorch's thread budget.

Inputs are contiguous NumPy arrays viewed as (T, N) with N = B * H. ``f``
and ``x`` are float32 / float64, or bfloat16 passed as its uint16 bit
patterns (NumPy has no bfloat16): a bfloat16 number is the upper half of a
float32, so it is widened in registers and every state is computed and
stored in float32; no float32 copy of the inputs is made. The backward
carries the running gradient in the states' dtype (float32 for bfloat16
gates) and writes the gradients of ``f`` and ``x`` in their own dtype
(bfloat16 rounded to nearest even).

Each kernel walks columns ``[lo, hi)`` in blocks (one step's row of a
block stays in cache for the next step) and, inside a block, walks time with
the columns innermost (vectorised). ``run_columns`` splits the N columns over
``torch.get_num_threads()`` threads of a pool that this module owns (the
kernels release the GIL): numba's own parallel backend would start an
OpenMP runtime that shares state with PyTorch's and resets its thread count
(one-job-per-core training ran 3x slower), so PyTorch's and OpenMP's
settings are never touched. The pool threads take the calling thread's
denormal flushing for each call. The compiled kernels are cached on disk
(``kernel_cache.cached``: numba's cache, which falls back to a private
temporary folder, or to none, and recompiles over a broken cache file, with
one warning, instead of failing).
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .denormals import flushing_denormals
from .kernel_cache import cached

_BLOCK = 8192  # columns per block: its running state stays in cache, and each row's run is long enough to prefetch
_MIN_COLUMNS_PER_THREAD = 256  # below this, splitting the columns costs more than it saves
_MIN_WORK_PER_THREAD = 1 << 16  # elements (T * columns) a thread must get
logging.getLogger("numba").setLevel(logging.WARNING)  # its compiler logs at DEBUG otherwise


@intrinsic
def _f32_from_bits(typingctx, bits):
    """uint32 bit pattern -> the float32 it encodes."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_from_f32(typingctx, value):
    """float32 -> its uint32 bit pattern."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


def _load(v):
    """An input element as a float: bfloat16 bits (uint16) widened to float32, floats as they are."""


@overload(_load)
def _load_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: _f32_from_bits(np.uint32(v) << np.uint32(16))
    return lambda v: v


def _store(out, j, value):
    """out[j] = value, rounded to bfloat16 (nearest even) when out holds uint16 bits."""


@overload(_store)
def _store_impl(out, j, value):
    if isinstance(out.dtype, types.Integer):

        def impl(out, j, value):
            bits = _bits_from_f32(np.float32(value))
            if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN stays a (quiet) NaN
                out[j] = np.uint16((bits >> np.uint32(16)) | np.uint32(0x40))
            else:
                bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
                out[j] = np.uint16(bits >> np.uint32(16))

        return impl

    def impl(out, j, value):
        out[j] = value

    return impl


@cached
@numba.njit(nogil=True)
def forget_mult_forward(f, x, h0, c, lo, hi):
    """Columns [lo, hi) of c_t = f_t * x_t + (1 - f_t) * c_{t-1}.

    f, x: (T, N) float, or bfloat16 bits as uint16; h0: (N,) and c: (T, N)
    float32/float64. Writes every state into c."""
    T = f.shape[0]
    for start in range(lo, hi, _BLOCK):
        stop = min(start + _BLOCK, hi)
        for t in range(T):
            # the previous states are the row just written (in cache): one store per element, not two
            prev = c[t - 1, start:stop] if t > 0 else h0[start:stop]
            f_t, x_t, c_t = f[t, start:stop], x[t, start:stop], c[t, start:stop]
            for j in range(stop - start):
                # c + f (x - c) = f x + (1 - f) c, without the integer 1 (it would promote float32 to float64)
                s = prev[j]
                c_t[j] = s + _load(f_t[j]) * (_load(x_t[j]) - s)


@cached
@numba.njit(nogil=True)
def forget_mult_backward(f, x, h0, c, grad_c, grad_last, grad_f, grad_x, grad_h0, lo, hi):
    """Columns [lo, hi) of the gradients of sum(grad_c * c) + sum(grad_last * c_T)
    with respect to f, x (written in their dtype, as grad_f, grad_x) and h0
    (grad_h0). grad_c is (T, N), or (1, N): the same gradient at every step;
    grad_last (N,) (zeros: none) starts the carried gradient."""
    T = f.shape[0]
    every_step = grad_c.shape[0] > 1
    for start in range(lo, hi, _BLOCK):
        stop = min(start + _BLOCK, hi)
        carry = grad_last[start:stop].copy()
        for t in range(T - 1, -1, -1):
            f_t, x_t, g_c = f[t, start:stop], x[t, start:stop], grad_c[t if every_step else 0, start:stop]
            prev = c[t - 1, start:stop] if t > 0 else h0[start:stop]
            g_f, g_x = grad_f[t, start:stop], grad_x[t, start:stop]
            for j in range(stop - start):
                g = g_c[j] + carry[j]
                g_f_x = g * _load(f_t[j])  # the gradient at x_t; g (1 - f_t) flows on to c_{t-1}
                _store(g_f, j, g * (_load(x_t[j]) - prev[j]))
                _store(g_x, j, g_f_x)
                carry[j] = g - g_f_x
        grad_h0[start:stop] = carry


_pool = None


def _threads_for(T: int, N: int) -> int:
    threads = min(torch.get_num_threads(), N // _MIN_COLUMNS_PER_THREAD, T * N // _MIN_WORK_PER_THREAD)
    return max(threads, 1)


def run_columns(kernel: Callable, T: int, N: int, *arrays) -> None:
    """``kernel(*arrays, lo, hi)`` over the N columns, split among up to
    ``torch.get_num_threads()`` threads (the calling thread takes one part)."""
    global _pool
    threads = _threads_for(T, N)
    if threads == 1:
        kernel(*arrays, 0, N)
        return
    flush = flushing_denormals()
    bounds = [N * k // threads for k in range(threads + 1)]

    def part(k):
        torch.set_flush_denormal(flush)  # this pool thread's own floating-point mode, as the caller's
        kernel(*arrays, bounds[k], bounds[k + 1])

    if _pool is None or _pool._max_workers < threads - 1:
        _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="forget-mult")
    futures = [_pool.submit(part, k) for k in range(1, threads)]
    kernel(*arrays, bounds[0], bounds[1])
    for future in futures:
        future.result()
