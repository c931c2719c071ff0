import pytest
import torch

from altsg_fairseq.modules import QRNNLayer, QRNNState


def _layer(window, **kw):
    torch.manual_seed(0)
    return QRNNLayer(3, 4, window=window, **kw).double()


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("with_h0", [True, False])
def test_gradcheck(window, with_h0):
    layer = _layer(window).eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    prev = torch.randn(2, 3, dtype=torch.float64)

    def run(x, c0=None):
        state = None if c0 is None else QRNNState(c0, prev if window == 2 else None)
        h, new = layer(x, state)
        return h, new.cell

    assert torch.autograd.gradcheck(run, (x, c0) if with_h0 else (x,))


@pytest.mark.parametrize("window", [1, 2])
def test_state_carry_equals_one_long_window(window):
    """Eval mode: one window of 2T == two windows of T with carried state."""
    layer = _layer(window, zoneout=0.1, weight_dropout=0.3).eval()
    x = torch.randn(8, 3, 3, dtype=torch.float64)
    h_full, s_full = layer(x)
    h1, s1 = layer(x[:4])
    h2, s2 = layer(x[4:], s1)
    torch.testing.assert_close(torch.cat([h1, h2]), h_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.cell, s_full.cell, rtol=1e-12, atol=1e-12)


def test_window2_sees_the_previous_segment_input_without_gradient():
    layer = _layer(2).eval()
    x = torch.randn(6, 1, 3, dtype=torch.float64, requires_grad=True)
    _, s1 = layer(x[:3])
    assert not s1.prev_x.requires_grad and torch.equal(s1.prev_x, x[2].detach())
    h2, _ = layer(x[3:], s1)
    h2.sum().backward()
    assert x.grad[:3].abs().sum() > 0  # through the carried cell state ...
    x.grad = None
    _, s1 = layer(x[:3])
    h2, _ = layer(x[3:], QRNNState(s1.cell.detach(), s1.prev_x))
    h2.sum().backward()
    assert x.grad[:3].abs().sum() == 0  # ... but never through the saved input


def test_zoneout_keeps_old_state_in_training():
    layer = QRNNLayer(2, 3, zoneout=1.0).train()  # every forget gate zeroed
    c0 = torch.randn(4, 3)
    h, state = layer(torch.randn(5, 4, 2), QRNNState(c0, None))
    torch.testing.assert_close(state.cell, c0)
