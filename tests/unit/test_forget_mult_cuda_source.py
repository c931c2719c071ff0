"""The CUDA kernel source, checked without a GPU.

1. nvcc compiles it (float and double), when the CUDA toolkit is installed.
2. A host harness compiles the same file with g++ and runs every per-thread
   body, phase by phase as the kernels would, for both designs (sequential
   and chunked scan); the results must equal the reference loop.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
import torch

from altsg_fairseq.modules import forget_mult_cuda, forget_mult_reference
from altsg_fairseq.modules.forget_mult_cuda import SOURCE

KERNEL = forget_mult_cuda.__file__.replace("forget_mult_cuda.py", "kernels/forget_mult.cu")

HARNESS = r"""
#include <vector>
#define SCALAR double
#include "%s"

extern "C" void host_forward(const double* f, const double* x, const double* h0, double* c, int T, int N, int L) {
  if (L == 0) { for (int n = 0; n < N; ++n) seq_forward(f, x, h0, c, T, N, n); return; }
  int K = (T + L - 1) / L;
  std::vector<double> A(K * N), B(K * N), start(K * N);
  for (int k = 0; k < K; ++k) for (int n = 0; n < N; ++n) chunk_forward_summary(f, x, A.data(), B.data(), T, N, L, k, n);
  for (int n = 0; n < N; ++n) chunk_forward_chain(h0, A.data(), B.data(), start.data(), K, N, n);
  for (int k = 0; k < K; ++k) for (int n = 0; n < N; ++n) chunk_forward_replay(f, x, start.data(), c, T, N, L, k, n);
}

extern "C" void host_backward(const double* f, const double* x, const double* h0, const double* c, const double* gc,
                              double* gf, double* gx, double* gh0, int T, int N, int L) {
  if (L == 0) { for (int n = 0; n < N; ++n) seq_backward(f, x, h0, c, gc, gf, gx, gh0, T, N, n); return; }
  int K = (T + L - 1) / L;
  std::vector<double> A(K * N), B(K * N), carry(K * N);
  for (int k = 0; k < K; ++k) for (int n = 0; n < N; ++n) chunk_backward_summary(f, gc, A.data(), B.data(), T, N, L, k, n);
  for (int n = 0; n < N; ++n) chunk_backward_chain(A.data(), B.data(), carry.data(), gh0, K, N, n);
  for (int k = 0; k < K; ++k) for (int n = 0; n < N; ++n) chunk_backward_replay(f, x, h0, c, gc, carry.data(), gf, gx, T, N, L, k, n);
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc)")
@pytest.mark.parametrize("scalar", ["float", "double"])
def test_nvcc_compiles_the_kernels(tmp_path, scalar):
    out = tmp_path / "fm.cubin"
    subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_80", f"-DSCALAR={scalar}", "-x", "cu", KERNEL, "-o", out],
        check=True,
        capture_output=True,
    )
    names = out.read_bytes()
    for kernel in [
        "fm_seq_forward",
        "fm_seq_backward",
        "fm_chunk_forward_summary",
        "fm_chunk_forward_chain",
        "fm_chunk_forward_replay",
        "fm_chunk_backward_summary",
        "fm_chunk_backward_chain",
        "fm_chunk_backward_replay",
    ]:
        assert kernel.encode() in names and kernel in SOURCE


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("harness")
    (d / "harness.cpp").write_text(HARNESS % KERNEL)
    subprocess.run(
        ["g++", "-O1", "-shared", "-fPIC", "-o", d / "harness.so", d / "harness.cpp"], check=True, capture_output=True
    )
    return ctypes.CDLL(str(d / "harness.so"))


def _ptr(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


@pytest.mark.parametrize(
    "T,N,L", [(1, 1, 0), (50, 7, 0), (1, 3, 4), (50, 7, 1), (50, 7, 8), (50, 7, 64), (1031, 5, 33)]
)
def test_host_harness_equals_reference(harness, T, N, L):
    rng = np.random.default_rng(T * 100 + N + L)
    f, x = rng.random((T, N)), rng.standard_normal((T, N))
    h0, gc = rng.standard_normal(N), rng.standard_normal((T, N))
    c = np.empty_like(f)
    gf, gx, gh0 = np.empty_like(f), np.empty_like(f), np.empty_like(h0)
    harness.host_forward(_ptr(f), _ptr(x), _ptr(h0), _ptr(c), T, N, L)
    harness.host_backward(_ptr(f), _ptr(x), _ptr(h0), _ptr(c), _ptr(gc), _ptr(gf), _ptr(gx), _ptr(gh0), T, N, L)

    ft, xt, ht = (torch.tensor(a, requires_grad=True) for a in (f, x, h0))
    c_ref = forget_mult_reference(ft.view(T, 1, N), xt.view(T, 1, N), ht.view(1, N)).view(T, N)
    g_ref = torch.autograd.grad(c_ref, (ft, xt, ht), torch.tensor(gc))
    np.testing.assert_allclose(c, c_ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip((gf, gx, gh0), g_ref):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


def test_chunk_length_choice():
    assert forget_mult_cuda.chunk_length(200, 20 * 1550) is None  # the base model: one thread per column
    L = forget_mult_cuda.chunk_length(101_000, 50)  # the synthesizer: chunked scan
    assert L and 300 <= L <= 330 and (101_000 + L - 1) // L * 50 >= 15_000


def test_every_pointer_of_every_kernel_and_body_is_restrict():
    """The kernels' arrays never overlap (every output and buffer is allocated afresh by
    forget_mult_cuda), and the source says so to the compiler: __restrict__ on each pointer."""
    import re

    assert "#define RESTRICT __restrict__" in SOURCE
    signatures = re.findall(r"(?:FM_FN|__global__)\s+\w+\s+(\w+)\s*\(([^)]*)\)", SOURCE)
    assert len(signatures) >= 8 + 8  # the eight kernels and their per-thread bodies
    for name, params in signatures:
        for param in (p.strip() for p in params.split(",")):
            if "*" in param:
                assert re.search(r"\*\s*RESTRICT\s+\w+$", param), (name, param)
