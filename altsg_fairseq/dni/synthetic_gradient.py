"""Where synthetic and real gradients meet, inside ONE backward pass (docs/method.md#the-single-backward-update).

``TrainSynthesizer.apply(state, g_hat, tokens, prediction_counts_twice, report)`` returns
``(state_out, probe)``. ``state_out`` equals ``state`` and replaces it in the
forward pass; ``probe`` is a zero scalar to be added to the loss. In the
backward pass the gradient arriving at ``state_out`` is the true gradient
(of the summed loss, times any loss scale) and the gradient arriving at
``probe`` is exactly that loss scale, so the function recovers

    g_true = grad(state_out) / (loss_scale * tokens)

the gradient of the per-token mean loss, and sends the synthesizer's output
the regression gradient 2 * (k * g_hat - g_true): k = 2 when
``prediction_counts_twice`` (the original code's update in synthetic phases,
where its two backward passes make the prediction count twice), else k = 1.
The gradient at ``state`` passes on unchanged. Once per backward pass it
calls ``report(g_hat, g_true, flags)`` (g_hat, g_true (B, S), detached; flags a (2,) bool tensor on their device:
[the loss had a non-zero scale, the error g_hat - g_true is finite]). Unless
both hold the synthesizer gets a zero gradient (a dummy batch whose loss was
zeroed, or a broken target or prediction). The backward pass reads nothing on
the host: the loss scale stays a device tensor and the two decisions are
``torch.where``s, so a GPU is not waited for in the middle of the backward
pass; ``report`` reads the flags later, with the step's other host reads.

``inject(end_state, g_hat_end, weight)`` is a zero-valued term whose
gradient with respect to ``end_state`` is ``weight * g_hat_end``: added to
the loss it injects a synthetic gradient at the end of the segment.
"""

from typing import Callable

import torch
from torch import Tensor


class TrainSynthesizer(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        state: Tensor,
        g_hat: Tensor,
        tokens: float,
        prediction_counts_twice: bool,
        report: Callable[[Tensor, Tensor, Tensor], None],
    ):
        """state: (B, S) the segment's start state; g_hat: (B, S) its predicted gradient."""
        ctx.tokens, ctx.prediction_counts_twice, ctx.report = tokens, prediction_counts_twice, report
        ctx.save_for_backward(g_hat)
        return state.clone(), state.new_zeros((), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_state: Tensor, grad_probe: Tensor):
        (g_hat,) = ctx.saved_tensors
        if grad_state is None or grad_probe is None:  # nothing reached the state, or no loss scale at all
            return grad_state, torch.zeros_like(g_hat), None, None, None
        # in the synthesizer's dtype (float32; BackwardInterface runs it outside autocast), whatever
        # the state's: a float16 target would underflow (per-token gradients ~1e-7 to 1e-5). The
        # divisor loss_scale * tokens is formed in float64 on the device, as Python would form it
        # from float(grad_probe), then rounded to that dtype as a Python number would be
        divisor = (grad_probe.detach().double() * ctx.tokens).to(g_hat.dtype)
        g_true = grad_state.to(g_hat.dtype) / divisor
        # e.g. a dummy batch with the loss zeroed; never train on a broken target or prediction
        flags = torch.stack([grad_probe.detach() != 0, torch.isfinite(g_hat - g_true).all()])
        ctx.report(g_hat.detach(), g_true.detach(), flags)
        k = 2.0 if ctx.prediction_counts_twice else 1.0
        return grad_state, torch.where(flags.all(), 2 * (k * g_hat - g_true), 0.0), None, None, None


def inject(end_state: Tensor, g_hat_end: Tensor, weight: float) -> Tensor:
    """A zero-valued scalar whose gradient at end_state (B, S) is weight * g_hat_end (B, S)."""
    term = (end_state * (weight * g_hat_end.detach().to(end_state.dtype))).sum()
    return term - term.detach()
