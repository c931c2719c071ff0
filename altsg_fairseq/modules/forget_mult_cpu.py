"""Compiled CPU forget-mult kernels (numba).

Inputs are contiguous NumPy arrays viewed as (T, N) with N = B * H. The N
columns are walked in blocks; inside a block the loop walks time, vectorised
over the block's columns. The backward accumulates the running gradient in
float64.

The kernels run on the calling thread only. numba's parallel kernels would
start its OpenMP threading layer, which shares the OpenMP runtime with
PyTorch and resets its thread count to the number of cores (``OMP_NUM_THREADS``
and ``torch.set_num_threads`` notwithstanding): one-job-per-core training ran
3x slower. At the seed's base shape (200 x 20 x 1550) the parallel kernel took
11 ms for forward + backward with 2 threads, this one 17-27 ms: 4 layers of it
are 1-2% of that configuration's 4.3 s training step (benchmarks/bench_forget_mult.py,
BENCHMARKS.md).
"""

import logging

import numba
import numpy as np

_BLOCK = 2048  # columns per block (its running state stays in cache)
logging.getLogger("numba").setLevel(logging.WARNING)  # its compiler logs at DEBUG otherwise


@numba.njit(cache=True)
def forget_mult_forward(f, x, h0, c):
    """f, x, c: (T, N); h0: (N,). Writes every state into c."""
    T, N = f.shape
    for blk in range((N + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, N)
        state = h0[lo:hi].copy()
        for t in range(T):
            f_t, x_t, c_t = f[t, lo:hi], x[t, lo:hi], c[t, lo:hi]
            for j in range(hi - lo):
                state[j] = f_t[j] * x_t[j] + (1 - f_t[j]) * state[j]
                c_t[j] = state[j]


@numba.njit(cache=True)
def forget_mult_backward(f, x, h0, c, grad_c, grad_f, grad_x, grad_h0):
    """Gradients of sum(grad_c * c) with respect to f, x and h0: (T, N), (T, N), (N,)."""
    T, N = f.shape
    for blk in range((N + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, N)
        carry = np.zeros(hi - lo, dtype=np.float64)
        for t in range(T - 1, -1, -1):
            f_t, x_t, g_c = f[t, lo:hi], x[t, lo:hi], grad_c[t, lo:hi]
            prev = c[t - 1, lo:hi] if t > 0 else h0[lo:hi]
            g_f, g_x = grad_f[t, lo:hi], grad_x[t, lo:hi]
            for j in range(hi - lo):
                g = g_c[j] + carry[j]
                g_f[j] = g * (x_t[j] - prev[j])
                g_x[j] = g * f_t[j]
                carry[j] = g * (1 - f_t[j])
        grad_h0[lo:hi] = carry
