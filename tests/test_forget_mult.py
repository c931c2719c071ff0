import pytest
import torch

from altsg_fairseq.modules import forget_mult, forget_mult_reference


def test_hand_computed_values():
    # c1 = .5 * 2 + .5 * 1 = 1.5 ; c2 = .25 * 4 + .75 * 1.5 = 2.125
    f = torch.tensor([0.5, 0.25]).view(2, 1, 1)
    x = torch.tensor([2.0, 4.0]).view(2, 1, 1)
    h0 = torch.tensor([[1.0]])
    assert forget_mult(f, x, h0).flatten().tolist() == [1.5, 2.125]
    # without h0 the state starts at zero: c1 = 1.0, c2 = 1 + .75 * 1 = 1.75
    assert forget_mult(f, x).flatten().tolist() == [1.0, 1.75]


@pytest.mark.parametrize("with_h0", [True, False])
def test_gradcheck_float64(with_h0):
    torch.manual_seed(0)
    f = torch.rand(5, 2, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    inputs = (f, x, torch.randn(2, 3, dtype=torch.float64, requires_grad=True)) if with_h0 else (f, x)
    assert torch.autograd.gradcheck(forget_mult, inputs)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        forget_mult_reference(torch.rand(3, 2, 4), torch.rand(3, 2, 5))
    with pytest.raises(ValueError, match="h0 of shape"):
        forget_mult_reference(torch.rand(3, 2, 4), torch.rand(3, 2, 4), torch.rand(2, 5))
