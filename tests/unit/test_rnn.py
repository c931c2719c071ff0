"""LSTM/GRU layers with weight drop, and the recurrent stack's one state interface."""

import pytest
import torch
from torch import nn

from altsg_fairseq.modules import QRNNState, RecurrentStack, RNNLayer, RNNState, map_state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_segments_with_carried_state_equal_one_pass(cell):
    torch.manual_seed(0)
    layer = RNNLayer(3, 5, cell).double()
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    full, last = layer(x)
    h1, s1 = layer(x[:4])
    h2, s2 = layer(x[4:], s1)
    torch.testing.assert_close(torch.cat([h1, h2]), full)
    for a, b in zip(s2, last):
        assert (a is None and b is None) or torch.allclose(a, b)
    assert (s2.c is None) == (cell == "gru")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_acts_on_the_hidden_to_hidden_weight_in_training(cell):
    torch.manual_seed(1)
    layer = RNNLayer(3, 4, cell, weight_dropout=0.5).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.manual_seed(7)
    out, _ = layer.train()(x)
    # the same mask by hand: F.dropout draws it first, from the same generator
    reference = (nn.LSTM if cell == "lstm" else nn.GRU)(3, 4).double()
    reference.load_state_dict(layer.rnn.state_dict())
    torch.manual_seed(7)
    with torch.no_grad():
        reference.weight_hh_l0.copy_(nn.functional.dropout(layer.rnn.weight_hh_l0, 0.5, True))
    expected, _ = reference(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, layer.eval()(x)[0])  # evaluation uses the full weight
    out.sum().backward()
    assert layer.rnn.weight_hh_l0.grad is not None and layer.rnn.weight_hh_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("cell,sizes", [("qrnn", [6, 6, 4]), ("lstm", [12, 12, 8]), ("gru", [6, 6, 4])])
def test_stack_packs_the_states_gradients_flow_through(cell, sizes):
    torch.manual_seed(2)
    stack = RecurrentStack(cell, 5, 6, 4, 3).double().eval()
    assert stack.state_sizes == sizes
    x = torch.randn(7, 2, 5, dtype=torch.float64)
    out, state = stack(x)
    flat = stack.pack(state)
    assert flat.shape == (2, sum(sizes))
    again = stack.unpack(flat, state)
    for a, b in zip(again, state):
        assert type(a) is type(b)
        for s, t in zip(a, b):
            assert (s is None and t is None) or torch.equal(s, t)
    # continuing from the unpacked state equals continuing from the original
    y = torch.randn(3, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(stack(y, again)[0], stack(y, state)[0])
    detached = map_state(state, torch.Tensor.detach)
    assert all(t is None or not t.requires_grad for s in detached for t in s)
    expected_type = QRNNState if cell == "qrnn" else RNNState
    assert all(isinstance(s, expected_type) for s in state)
