"""The QRNN forget-mult recurrence.

    c_t = f_t * x_t + (1 - f_t) * c_{t-1}

``forget_mult(f, x, h0=None)`` takes ``f`` and ``x`` of shape (T, B, H) and an
optional initial state ``h0`` of shape (B, H) (zeros when omitted) and returns
every state ``c`` of shape (T, B, H).

This file holds the reference implementation: a plain loop over time, kept
as the oracle that every faster backend is tested against.
"""

from typing import Optional

import torch
from torch import Tensor


def _check_inputs(f: Tensor, x: Tensor, h0: Optional[Tensor]) -> None:
    if f.dim() != 3 or f.shape != x.shape:
        raise ValueError(
            f"forget_mult expects f and x of the same shape (T, B, H); "
            f"got f {tuple(f.shape)} and x {tuple(x.shape)}"
        )
    if h0 is not None and h0.shape != f.shape[1:]:
        raise ValueError(
            f"forget_mult expects h0 of shape (B, H) = {tuple(f.shape[1:])}; "
            f"got {tuple(h0.shape)}"
        )


def forget_mult_reference(f: Tensor, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """Loop over time with autograd; slow and obviously correct.

    f, x: (T, B, H); h0: (B, H) or None. Returns c: (T, B, H).
    """
    _check_inputs(f, x, h0)
    c = h0
    states = []
    for t in range(f.size(0)):
        c = f[t] * x[t] if c is None else f[t] * x[t] + (1 - f[t]) * c
        states.append(c)
    return torch.stack(states)


def forget_mult(f: Tensor, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """All states of the forget-mult recurrence.

    f, x: (T, B, H); h0: (B, H) or None (zeros). Returns c: (T, B, H).
    """
    return forget_mult_reference(f, x, h0)
