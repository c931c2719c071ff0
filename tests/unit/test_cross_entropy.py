"""The block-wise summed cross-entropy against F.cross_entropy on float32 copies:
the loss, and the gradient in the logits' dtype, for float64, float32 and bfloat16."""

import pytest
import torch
import torch.nn.functional as F

from altsg_fairseq.modules.cross_entropy import BLOCK_ELEMENTS, summed_cross_entropy


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2**-7)])
@pytest.mark.parametrize("n,vocab", [(1, 3), (7, 5), (BLOCK_ELEMENTS // 50 + 3, 50), (3, BLOCK_ELEMENTS + 7)])
def test_equals_pytorchs_cross_entropy_on_float32_copies(dtype, rtol, n, vocab):
    g = torch.Generator().manual_seed(n + vocab)
    logits = (4 * torch.randn(n, vocab, generator=g)).to(dtype).requires_grad_()
    target = torch.randint(vocab, (n,), generator=g)
    wide = logits.detach().to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    expected = F.cross_entropy(wide, target, reduction="sum")
    loss = summed_cross_entropy(logits, target)
    assert loss.dtype == wide.dtype
    torch.testing.assert_close(loss, expected, rtol=1e-5 if dtype != torch.float64 else 1e-12, atol=0)
    scale = torch.tensor(0.37, dtype=loss.dtype)
    (grad,) = torch.autograd.grad(loss * scale, logits)
    (expected_grad,) = torch.autograd.grad(expected * scale, wide)
    assert grad.dtype == dtype
    # the exact gradient, rounded once to the logits' dtype
    torch.testing.assert_close(
        grad.to(expected_grad.dtype), expected_grad, rtol=rtol, atol=1e-12 if dtype == torch.float64 else 1e-6
    )  # p - 1 for p near 1: float32 eps


def test_gradcheck_and_bad_shapes():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 5, 2, 2])
    assert torch.autograd.gradcheck(lambda t: summed_cross_entropy(t, target), (logits,))
    with pytest.raises(ValueError, match="logits \\(N, V\\) and target \\(N,\\)"):
        summed_cross_entropy(logits, target[:3])
