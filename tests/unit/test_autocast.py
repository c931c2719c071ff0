"""Mixed precision in plain PyTorch: under autocast the recurrent states stay
float32 (the forget-mult's, the carried ones, an LSTM's), the outputs follow
the float32 model to bfloat16's precision, and the synthesizer runs in float32
with every parameter learning from gradients of the true size (~1e-7 to 1e-5)."""

import copy

import pytest
import torch

from altsg_fairseq.dni import BackwardInterface, Synthesizer
from altsg_fairseq.modules import RecurrentStack, kept_state

T, B, IN, H = 12, 3, 8, 16


@pytest.mark.parametrize("cell", ["qrnn", "lstm", "gru"])
def test_states_stay_float32_under_bfloat16_autocast(cell):
    torch.manual_seed(0)
    stack = RecurrentStack(cell, IN, H, IN, 2)
    x = torch.randn(T, B, IN)
    out32, final32 = stack(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = stack(x)
        carried = kept_state(final)
        out2, _ = stack(x, carried)  # a float32 carried state goes back in under autocast
    if cell != "gru":  # PyTorch's CPU autocast runs a GRU in float32
        assert out.dtype == torch.bfloat16 and out2.dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for s in carried for t in s if t is not None)
    if cell == "qrnn":  # the cell states themselves: the forget-mult accumulates in float32
        assert all(s.cell.dtype == torch.float32 for s in final)
    # the float32 model to bfloat16's precision (inputs and weights rounded to 8 significant bits)
    torch.testing.assert_close(out.float(), out32, rtol=0, atol=0.05)
    for s, s32 in zip(kept_state(final), final32):
        for t, t32 in zip(s, s32):
            if t is not None:
                torch.testing.assert_close(t, t32, rtol=0, atol=0.05)


def tiny_gradient_window(interface, dtype):
    """One window under CPU autocast of ``dtype`` whose true gradient at the start
    state is ~1e-7 to 1e-5 per element (the size the synthesizer learns from)."""
    torch.manual_seed(1)
    start = torch.randn(B, 2 * H)
    weight = torch.randn(B, 2 * H) * torch.logspace(-7, -5, 2 * H)
    with torch.autocast("cpu", dtype=dtype):
        state, probe = interface.wrap_start(start, tokens=1.0)
        g_hat = interface._predict(start)
        loss = (state * weight).sum() + probe
    loss.backward()
    return g_hat


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("core", ["qrnn", "gru", "lstm"])
def test_the_synthesizer_runs_in_float32_under_autocast(core, dtype):
    torch.manual_seed(0)
    synthesizer = Synthesizer(core, hidden=8, noise_std=0.0)
    interface = BackwardInterface(synthesizer)
    # first bring the prediction to the true gradient's size, as a trained synthesizer's is
    with torch.no_grad():
        synthesizer.output_map.weight.mul_(1e-6)
        synthesizer.output_map.bias.zero_()
    tiny_gradient_window(interface, dtype)  # a first window: the core's recurrent state is no longer zero
    interface.pop_stats()
    synthesizer.zero_grad(set_to_none=True)
    g_hat = tiny_gradient_window(interface, dtype)
    assert g_hat.dtype == torch.float32
    for name, p in synthesizer.named_parameters():
        assert p.dtype == torch.float32
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # float16 would flush these to zero
    stats = interface.pop_stats()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in stats.values())
    assert stats["sg_skipped"] == 0 and stats["sg_true_sq"] > 0


def test_the_injected_gradient_takes_the_end_states_dtype():
    synthesizer = Synthesizer("gru", hidden=4, noise_std=0.0)
    interface = BackwardInterface(synthesizer)
    interface.synthetic = True
    end = torch.randn(B, 2 * H).to(torch.bfloat16).requires_grad_()  # an LSTM's end state under autocast
    interface.wrap_start(torch.randn(B, 2 * H), tokens=1.0)
    twin = copy.deepcopy(synthesizer)  # its recurrent state as inject will find it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        term = interface.inject(end, tokens=10.0)
    term.backward()
    assert term.item() == 0 and end.grad.dtype == torch.bfloat16
    with torch.no_grad():
        expected = 0.1 * 10.0 * twin(end.detach().float())
    torch.testing.assert_close(end.grad.float(), expected, rtol=2**-7, atol=0)
