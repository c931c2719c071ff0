"""qrnn_lm through fairseq's registries: the published sizes, carried state."""

import pytest
import torch

from helpers import build_from_flags


def build(tmp_path, arch, num_types, *extra):
    """A model over a dictionary of ``num_types`` entries (the original code's vocabulary
    already holds <eos> and <unk>; fairseq adds <s> and <pad>: helpers.write_dictionary)."""
    task, model = build_from_flags(tmp_path, "--arch", arch, *extra, num_types=num_types)[1:3]
    assert len(task.dictionary) == num_types
    return model


def qrnn_params(inputs, hidden, window):
    return window * inputs * 3 * hidden + 3 * hidden


def expected_published_params(vocab):
    """The published AWD-QRNN: 4 layers, 1550 hidden, emsize 400, tied decoder with bias."""
    layers = qrnn_params(400, 1550, 2) + 2 * qrnn_params(1550, 1550, 1) + qrnn_params(1550, 400, 1)
    return vocab * 400 + vocab + layers


@pytest.mark.parametrize("arch,vocab,approx", [("qrnn_lm_ptb", 10_000, 24.02e6), ("qrnn_lm_wt2", 33_278, 33.35e6)])
def test_parameter_counts(tmp_path, arch, vocab, approx):
    model = build(tmp_path, arch, vocab)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_published_params(vocab)
    assert abs(count - approx) < 0.005e6


def test_architectures_set_the_published_sizes(tmp_path):
    ptb = build(tmp_path, "qrnn_lm_ptb", 100).decoder
    wt2 = build(tmp_path, "qrnn_lm_wt2", 100).decoder
    assert ptb.state_sizes == wt2.state_sizes == [1550, 1550, 1550, 400]
    assert [layer.window for layer in ptb.rnn.layers] == [2, 1, 1, 1]
    assert (ptb.cfg.dropout_hidden, wt2.cfg.dropout_hidden) == (0.3, 0.2)
    assert ptb.cfg.dropout_input == 0.4 and ptb.cfg.weight_drop == 0.1 and ptb.cfg.dropout == 0.4
    small = build(tmp_path, "qrnn_lm", 100, "--hidden-dim", "32").decoder
    assert small.state_sizes == [32, 256]


def test_model_carries_state_between_windows(tmp_path):
    model = build(tmp_path, "qrnn_lm", 50, "--embed-dim", "8", "--hidden-dim", "12").eval()
    tokens = torch.randint(4, 50, (3, 10))
    full, _ = model(tokens, stream="a", reset=True)
    first, _ = model(tokens[:, :6], stream="b", reset=True)
    model(tokens[:, :2], stream="a", reset=True)  # another stream does not interfere
    second, _ = model(tokens[:, 6:], stream="b")
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-5, atol=1e-5)
    again, _ = model(tokens[:, :6], stream="b", reset=True)
    torch.testing.assert_close(again, first)
