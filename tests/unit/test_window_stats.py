"""The statistics of a window have one fixed set of keys, whatever happened in it.

fairseq sums the logging outputs of data-parallel workers as ONE concatenated
buffer (``all_reduce_dict``: Python numbers in one buffer, tensors on the
device in another, each in key order) before it checks for an overflow, so a
worker whose backward overflowed must send the same keys, in the same order
and of the same kind, as one whose backward did not.
"""

import math

import torch

from altsg_fairseq.dni import BackwardInterface, Synthesizer

B, SIZES = 3, [2, 3]  # a flat state of two layers, 2 + 3 numbers a row


def layout(stats):
    """What fairseq's all-reduce sees of a logging output: key order and each value's kind."""
    return [
        (k, "tensor" if torch.is_tensor(v) else "number", (str(v.dtype), v.device.type) if torch.is_tensor(v) else None)
        for k, v in stats.items()
    ]


def window(interface, W, synthetic=False):
    """One window whose loss is sum(W * start): the true gradient at the start state is W / tokens."""
    interface.synthetic = synthetic
    start, probe = interface.wrap_start(torch.randn(B, sum(SIZES), dtype=torch.float64), tokens=10)
    loss = (start * W).sum() + probe
    if synthetic:
        loss = loss + interface.inject(torch.randn(B, sum(SIZES), dtype=torch.float64, requires_grad=True), 10)
    loss.backward()
    return interface.pop_stats()


def make(layer_sizes=SIZES):
    torch.manual_seed(0)
    return BackwardInterface(Synthesizer("gru", hidden=3, noise_std=0.0).double(), layer_sizes=layer_sizes)


def test_a_finite_and_a_non_finite_window_have_the_same_keys():
    W = torch.randn(B, sum(SIZES), dtype=torch.float64)
    finite = window(make(), W)
    broken = window(make(), torch.full_like(W, math.inf))  # the gradient at the start state overflows
    assert finite["sg_skipped"] == 0 and broken["sg_skipped"] == 1
    assert layout(finite) == layout(broken)
    expected = {
        "sg_steps",
        "sg_elements",
        "sg_skipped",
        "sg_on",
        "sg_loss",
        "sg_injected_sq",
        "sg_future_sq",
        *(f"{name}{suffix}" for name in ("sg_hat_sq", "sg_true_sq", "sg_dot") for suffix in ("", "_l0", "_l1")),
    }
    assert set(finite) == expected
    # what the broken window did not measure is zero, not a NaN that would poison the sums
    assert all(float(broken[k]) == 0.0 for k in expected - {"sg_steps", "sg_elements", "sg_skipped", "sg_on"})
    assert float(finite["sg_true_sq"]) == float((W / 10).pow(2).sum())  # measured where finite


def test_windows_before_and_after_an_injection_and_without_layers_keep_their_keys():
    W = torch.randn(B, sum(SIZES), dtype=torch.float64)
    interface = make()
    first = window(interface, W, synthetic=True)  # injects at its end: the next window pairs it
    second = window(interface, W, synthetic=True)
    assert layout(first) == layout(second)
    assert float(first["sg_injected_sq"]) == 0.0 and float(second["sg_injected_sq"]) > 0
    assert float(second["sg_future_sq"]) == float(second["sg_true_sq"]) > 0
    plain = window(make(layer_sizes=None), W)  # one part: no per-layer keys, still the overall ones
    assert not any(k.endswith(("_l0", "_l1")) for k in plain)
    assert {"sg_injected_sq", "sg_future_sq", "sg_dot"} <= set(plain)


def test_a_window_whose_backward_never_ran_has_the_keys_too():
    interface = make()
    interface.wrap_start(torch.randn(B, sum(SIZES), dtype=torch.float64), tokens=10)
    W = torch.randn(B, sum(SIZES), dtype=torch.float64)
    assert layout(interface.pop_stats()) == layout(window(make(), W))
