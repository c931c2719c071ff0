import pytest
import torch

from altsg_fairseq.modules import forget_mult, forget_mult_reference
from altsg_fairseq.modules.forget_mult import BackendUnavailable

CUDA = torch.cuda.is_available()
BACKENDS = ["cpu"] + (["cuda"] if CUDA else [])
# (5, 3, 6000): 18,000 columns, two full blocks of the CPU kernels and a partial one
SHAPES = [(1, 1, 1), (1, 3, 4), (7, 1, 1), (33, 2, 5), (64, 3, 700), (300, 1, 50), (5, 3, 6000)]


def test_hand_computed_values():
    # c1 = .5 * 2 + .5 * 1 = 1.5 ; c2 = .25 * 4 + .75 * 1.5 = 2.125
    f = torch.tensor([0.5, 0.25]).view(2, 1, 1)
    x = torch.tensor([2.0, 4.0]).view(2, 1, 1)
    h0 = torch.tensor([[1.0]])
    for backend in ["reference", "cpu"]:
        assert forget_mult(f, x, h0, backend=backend).flatten().tolist() == [1.5, 2.125]
        # without h0 the state starts at zero: c1 = 1.0, c2 = 1 + .75 * 1 = 1.75
        assert forget_mult(f, x, backend=backend).flatten().tolist() == [1.0, 1.75]


def _inputs(T, B, H, device, dtype=torch.float64, with_h0=True, transposed=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if transposed:  # non-contiguous views of (B, T, H) storage
        f = torch.rand(B, T, H, generator=g, dtype=dtype).transpose(0, 1)
        x = torch.randn(B, T, H, generator=g, dtype=dtype).transpose(0, 1)
    else:
        f = torch.rand(T, B, H, generator=g, dtype=dtype)
        x = torch.randn(T, B, H, generator=g, dtype=dtype)
    h0 = torch.randn(H, B, generator=g, dtype=dtype).t() if with_h0 else None
    to = lambda t: None if t is None else t.to(device).requires_grad_()  # noqa: E731
    return to(f), to(x), to(h0)


def _run(f, x, h0, backend, grad_c):
    c = forget_mult(f, x, h0, backend=backend) if backend else forget_mult_reference(f, x, h0)
    grads = torch.autograd.grad(c, [t for t in (f, x, h0) if t is not None], grad_c)
    return c, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_backend_equals_reference(backend, shape, with_h0, transposed):
    device = "cuda" if backend == "cuda" else "cpu"
    f, x, h0 = _inputs(*shape, device, torch.float32, with_h0, transposed)
    grad_c = torch.randn(shape, device=device)
    c_ref, g_ref = _run(f.double(), x.double(), None if h0 is None else h0.double(), None, grad_c.double())
    c, g = _run(f, x, h0, backend, grad_c)
    assert c.dtype == torch.float32 and c.shape == shape
    torch.testing.assert_close(c.double(), c_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_gradcheck_float64(backend, with_h0):
    device = "cuda" if backend == "cuda" else "cpu"
    f, x, h0 = _inputs(6, 2, 3, device, with_h0=with_h0)
    inputs = (f, x, h0) if with_h0 else (f, x)
    assert torch.autograd.gradcheck(lambda *a: forget_mult(*a, backend=backend), inputs)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_states(backend, dtype):
    # the states of half-precision gates (autocast) are float32, computed from
    # the inputs' exact values; the gradients come back in the inputs' dtype
    f, x, h0 = (t.detach().to(dtype).requires_grad_() for t in _inputs(20, 2, 3, "cpu"))
    c = forget_mult(f, x, h0.float(), backend=backend)
    assert c.dtype == torch.float32
    wide = [t.detach().double().requires_grad_() for t in (f, x, h0)]
    ref = forget_mult_reference(*wide)
    torch.testing.assert_close(c.double(), ref, rtol=1e-6, atol=1e-6)
    grad_c = torch.randn(c.shape)
    grads = torch.autograd.grad(c, (f, x), grad_c)
    refs = torch.autograd.grad(ref, wide[:2], grad_c.double())
    for g, r in zip(grads, refs):
        assert g.dtype == dtype
        # the exact gradient rounded once to the inputs' precision (one unit in the last place)
        torch.testing.assert_close(g.double(), r, rtol=2.0**-7, atol=1e-6)


def test_columns_split_over_threads_give_the_same_bits():
    # (300, 2, 400): 800 columns, enough for two threads
    f, x, h0 = (t.detach() for t in _inputs(300, 2, 400, "cpu", torch.float32))
    grad_c = torch.randn(300, 2, 400)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            fi, xi, hi = (t.clone().requires_grad_() for t in (f, x, h0))
            c = forget_mult(fi, xi, hi, backend="cpu")
            results.append([c, *torch.autograd.grad(c, (fi, xi, hi), grad_c)])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_backend_switch(monkeypatch):
    f, x, h0 = _inputs(4, 1, 2, "cpu")
    with pytest.raises(ValueError, match="unknown forget_mult backend"):
        forget_mult(f, x, h0, backend="fast")
    monkeypatch.setenv("ALTSG_FORGET_MULT", "reference")
    assert forget_mult(f, x, h0).grad_fn.name() == "StackBackward0"
    monkeypatch.setenv("ALTSG_FORGET_MULT", "cpu")
    assert "CompiledForgetMult" in forget_mult(f, x, h0).grad_fn.name()


@pytest.mark.skipif(CUDA, reason="checks the error without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    f, x, h0 = _inputs(4, 1, 2, "cpu")
    with pytest.raises(BackendUnavailable, match="CUDA tensors"):
        forget_mult(f, x, h0, backend="cuda")


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        forget_mult(torch.rand(3, 2, 4), torch.rand(3, 2, 5))
    with pytest.raises(ValueError, match="h0 of shape"):
        forget_mult(torch.rand(3, 2, 4), torch.rand(3, 2, 4), torch.rand(2, 5))


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("chunk", [0, 7, 32])
@pytest.mark.parametrize("shape", [(1, 1, 1), (100, 1, 50), (1500, 2, 3)])
def test_cuda_designs_equal_reference(chunk, shape):
    pytest.importorskip("cupy")
    from altsg_fairseq.modules import forget_mult_cuda

    T, B, H = shape
    f, x, h0 = (
        t.detach().reshape(T, -1) if t.dim() == 3 else t.detach().reshape(-1)
        for t in _inputs(*shape, "cuda", torch.float32)
    )
    grad_c = torch.randn(T, B * H, device="cuda")
    c = forget_mult_cuda.forward(f, x, h0, chunk=chunk)
    grads = forget_mult_cuda.backward(f, x, h0, c, grad_c, chunk=chunk)
    fr, xr, hr = (t.cpu().double().requires_grad_() for t in (f, x, h0))
    c_ref = forget_mult_reference(fr.view(T, B, H), xr.view(T, B, H), hr.view(B, H)).view(T, -1)
    g_ref = torch.autograd.grad(c_ref, (fr, xr, hr), grad_c.cpu().double())
    torch.testing.assert_close(c.cpu().double(), c_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, g_ref):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs(dtype):
    pytest.importorskip("cupy")
    f, x, h0 = (t.detach().to(dtype) for t in _inputs(3000, 1, 50, "cuda"))
    c = forget_mult(f, x, h0, backend="cuda")
    assert c.dtype == torch.float32
    ref = forget_mult_reference(f.double().cpu(), x.double().cpu(), h0.double().cpu())
    torch.testing.assert_close(c.double().cpu(), ref, rtol=1e-5, atol=1e-5)
