"""fo-pooling's two paths (modules/fo_pool.py): the fused CPU function equals the composite PyTorch
operations under autograd (values and every gradient, with zoneout masks drawn alike), passes
gradcheck in float64, and c_T's gradient enters the forget-mult as its carried gradient's start."""

import pytest
import torch

from altsg_fairseq.modules import fo_pool as fo_pool_module
from altsg_fairseq.modules.fo_pool import fo_pool
from altsg_fairseq.modules.forget_mult import forget_mult_reference, forget_mult_with_last

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


@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("zoneout,training", [(0.0, True), (0.4, True), (0.4, False)])
@pytest.mark.parametrize("bias,cell", [(True, True), (False, False)])
@pytest.mark.parametrize("which", ["h", "last", "both"])
def test_fused_equals_composite(output_gate, zoneout, training, bias, cell, which):
    inputs = _inputs(output_gate, bias, cell)
    fused = _run(fo_pool, inputs, zoneout, training, output_gate, which)
    composite = _run(_composite, inputs, zoneout, training, output_gate, which)
    for a, b in zip((fused[0], fused[1], *fused[2]), (composite[0], composite[1], *composite[2])):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_zoneout_mask_matters_and_is_drawn_as_the_composite_draws_it():
    inputs = _inputs(True, True, True)
    with_mask = _run(fo_pool, inputs, 0.5, True, True, "both")[0]
    without = _run(fo_pool, inputs, 0.0, True, True, "both")[0]
    assert not torch.allclose(with_mask, without)  # half the forget gates zeroed changes the states


@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("zoneout", [0.0, 0.3])  # evaluation: F scaled by 1 - p
def test_gradcheck_float64(output_gate, zoneout):
    inputs = _inputs(output_gate, True, True, torch.float64)

    def run(x, weight, bias, cell):
        return fo_pool(x, weight, bias, cell, zoneout=zoneout, training=False, output_gate=output_gate)

    assert torch.autograd.gradcheck(run, inputs)


def test_the_fused_path_runs_where_it_should():
    """float32 on a CPU: the fused function; under autocast: the composite path (bfloat16 h)."""
    x, weight, bias, cell = _inputs(True, True, True)
    h, last = fo_pool(x, weight, bias, cell)
    assert type(h.grad_fn).__name__ == "_FusedQRNNBackward" and last.grad_fn is h.grad_fn
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, last = fo_pool(x, weight, bias, cell)
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
