"""fo-pooling's two paths (modules/fo_pool.py): the fused CPU function equals the composite PyTorch
operations under autograd (values and every gradient, with zoneout masks drawn alike), passes
gradcheck in float64, and c_T's gradient enters the forget-mult as its carried gradient's start."""

import pytest
import torch

from altsg_fairseq.modules import fo_pool as fo_pool_module
from altsg_fairseq.modules.fo_pool import fo_pool
from altsg_fairseq.modules.forget_mult import compiled_cpu_kernels, forget_mult_reference, forget_mult_with_last

T, B, D, H = 7, 3, 5, 6  # D: the input size


def _inputs(output_gate, bias, cell, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = 3 if output_gate else 2
    tensors = [torch.randn(T, B, D, generator=g, dtype=dtype), torch.randn(k * H, D, generator=g, dtype=dtype)]
    tensors.append(torch.randn(k * H, generator=g, dtype=dtype) if bias else None)
    tensors.append(torch.randn(B, H, generator=g, dtype=dtype) if cell else None)
    return [None if t is None else t.requires_grad_() for t in tensors]


def _run(path, inputs, zoneout, training, output_gate, which):
    """(h, c_T, gradients of the inputs) of one path, the zoneout mask drawn from seed 7."""
    inputs = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    torch.manual_seed(7)
    h, last = path(*inputs, zoneout=zoneout, training=training, output_gate=output_gate)
    g = torch.Generator().manual_seed(3)
    terms = []
    if which in ("h", "both"):
        terms.append((h * torch.randn(h.shape, generator=g, dtype=h.dtype)).sum())
    if which in ("last", "both"):
        terms.append((last * torch.randn(last.shape, generator=g, dtype=last.dtype)).sum())
    present = [t for t in inputs if t is not None]
    return h, last, torch.autograd.grad(sum(terms), present, allow_unused=True)


def _composite(x, weight, bias, cell, zoneout, training, output_gate):
    return fo_pool_module._composite(x, weight, bias, cell, zoneout, training, output_gate)


def _fused(x, weight, bias, cell, zoneout, training, output_gate):
    """The fused path whatever the size (fo_pool takes it for blocks of 1 MiB and more)."""
    kernels = compiled_cpu_kernels(x.device)
    return fo_pool_module._fused(x, weight, bias, cell, zoneout, training, output_gate, kernels)


@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("zoneout,training", [(0.0, True), (0.4, True), (0.4, False)])
@pytest.mark.parametrize("bias,cell", [(True, True), (False, False)])
@pytest.mark.parametrize("which", ["h", "last", "both"])
def test_fused_equals_composite(output_gate, zoneout, training, bias, cell, which):
    inputs = _inputs(output_gate, bias, cell)
    fused = _run(_fused, inputs, zoneout, training, output_gate, which)
    composite = _run(_composite, inputs, zoneout, training, output_gate, which)
    for a, b in zip((fused[0], fused[1], *fused[2]), (composite[0], composite[1], *composite[2])):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_zoneout_mask_matters_and_is_drawn_as_the_composite_draws_it():
    inputs = _inputs(True, True, True)
    with_mask = _run(_fused, inputs, 0.5, True, True, "both")[0]
    without = _run(_fused, inputs, 0.0, True, True, "both")[0]
    assert not torch.allclose(with_mask, without)  # half the forget gates zeroed changes the states


@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("zoneout", [0.0, 0.3])  # evaluation: F scaled by 1 - p
def test_gradcheck_float64(output_gate, zoneout):
    inputs = _inputs(output_gate, True, True, torch.float64)

    def run(x, weight, bias, cell):
        return _fused(x, weight, bias, cell, zoneout=zoneout, training=False, output_gate=output_gate)

    assert torch.autograd.gradcheck(run, inputs)


def test_shapes_that_do_not_fit_are_one_clear_error():
    x, weight, bias, cell = _inputs(True, True, True)
    with pytest.raises(ValueError, match="cell of shape"):
        fo_pool(x, weight, bias, cell[:2])
    with pytest.raises(ValueError, match="D columns"):
        fo_pool(x, weight[:, :4], bias, cell)
    with pytest.raises(ValueError, match="3 x H rows"):
        fo_pool(x, weight[:-1], bias, cell)


def test_the_fused_path_runs_where_it_should():
    """float32 on a CPU with (T, B, H) blocks of 1 MiB or more: the fused function; smaller blocks, or
    under autocast: the composite path (bfloat16 h under autocast)."""
    x, weight, bias, cell = _inputs(True, True, True)

    def fused(*inputs):
        h, last = fo_pool(*inputs)
        assert last.grad_fn is not None
        return type(h.grad_fn).__name__ == "_FusedQRNNBackward" and last.grad_fn is h.grad_fn

    assert not fused(x, weight, bias, cell)  # 7 x 3 x 6 numbers a block
    big_x, big_cell = x.detach().repeat(100, 30, 1), cell.detach().repeat(30, 1)  # 700 x 90 x 6: 1.4 MiB
    assert fused(big_x, weight, bias, big_cell)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, last = fo_pool(big_x, weight, bias, big_cell)
    assert h.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert type(h.grad_fn).__name__ != "_FusedQRNNBackward"


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("which", ["c", "last", "both"])
def test_forget_mult_with_last_gradient_at_the_last_state(backend, which):
    """c_T's gradient, taken as the kernel's carried gradient's start, equals c[-1]'s through the loop."""
    g = torch.Generator().manual_seed(0)
    f, x, h0 = torch.rand(6, 2, 5, generator=g), torch.randn(6, 2, 5, generator=g), torch.randn(2, 5, generator=g)
    grad_c, grad_last = torch.randn(6, 2, 5, generator=g), torch.randn(2, 5, generator=g)
    results = []
    for path in ("with_last", "loop"):
        inputs = [t.clone().requires_grad_() for t in (f, x, h0)]
        if path == "with_last":
            c, last = forget_mult_with_last(*inputs, backend=backend)
            assert last.shape == (2, 5) and torch.equal(last, c[-1])
        else:
            c = forget_mult_reference(*inputs)
            last = c[-1]
        loss = ((c * grad_c).sum() if which != "last" else 0) + ((last * grad_last).sum() if which != "c" else 0)
        results.append(torch.autograd.grad(loss, inputs))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_equals_composite_through_the_recycled_buffers():
    """Blocks of 1 MiB (the pool's smallest), two stacked layers, c_T carried with its graph from one
    layer into the next, three steps (so buffers are handed out again), x transposed (not contiguous),
    and the gradient of a sum (the same at every step): the fused path equals the composite one."""
    steps, found = 3, []
    for path in (fo_pool, _composite):
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(8, 64, 40, generator=g).transpose(0, 1)  # (64, 8, 40), not contiguous
        weights = [torch.randn(3 * 512, 40, generator=g) / 8, torch.randn(3 * 512, 512, generator=g) / 30]
        weights = [w.requires_grad_() for w in weights]
        torch.manual_seed(5)
        out = []
        for _ in range(steps):
            h1, last1 = path(x0, weights[0], None, None, zoneout=0.2, training=True, output_gate=True)
            h2, last2 = path(h1, weights[1], None, last1, zoneout=0.2, training=True, output_gate=True)
            grads = torch.autograd.grad(h2.sum() + (last2**2).sum(), weights)
            out.append([h2.detach(), last2.detach(), *grads])
        found.append(out)
    for fused, composite in zip(*found):
        for a, b in zip(fused, composite):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_outputs_take_in_place_operations_and_double_backward_is_refused():
    x, weight, bias, cell = _inputs(True, True, True)
    x = x.detach().repeat(100, 30, 1).requires_grad_()  # (700, 90, 5): 1.5 MB blocks, from the pool
    h, last = fo_pool(x, weight, bias, cell.detach().repeat(30, 1))
    assert type(h.grad_fn).__name__ == "_FusedQRNNBackward"
    h.mul_(2)  # a tensor of its own, not a view of a buffer
    v = torch.randn(h.shape, requires_grad=True)
    (grad_x,) = torch.autograd.grad(h, x, v, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad_x.sum().backward()
