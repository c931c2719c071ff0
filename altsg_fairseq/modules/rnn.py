"""LSTM and GRU layers with AWD weight drop, as alternate_sg's ``--model LSTM|GRU``."""

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


class RNNState(NamedTuple):
    """What one LSTM/GRU layer carries: h (B, H) and, for an LSTM, c (B, H)."""

    h: Tensor
    c: Optional[Tensor]


class RNNLayer(nn.Module):
    """One LSTM or GRU layer with AWD-LSTM's weight drop, interchangeable with QRNNLayer.

    Args:
        input_size, hidden_size: I and H.
        cell: ``"lstm"`` or ``"gru"`` (``ValueError`` otherwise), alternate_sg's
            ``--model LSTM|GRU``.
        weight_dropout: DropConnect on the hidden-to-hidden weight
            (``weight_hh_l0``, as AWD-LSTM's WeightDrop), training only.

    Inputs:
        x: (T, B, I); state: the previous segment's RNNState or None (zeros).

    Outputs:
        (h (T, B, H), the RNNState after step T, with graph).
    """

    State = RNNState

    def __init__(self, input_size: int, hidden_size: int, cell: str = "lstm", weight_dropout: float = 0.0):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"RNNLayer cell must be 'lstm' or 'gru', got {cell!r}")
        self.input_size, self.hidden_size, self.cell = input_size, hidden_size, cell
        self.weight_dropout = weight_dropout
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(input_size, hidden_size)

    @property
    def state_size(self) -> int:
        """Numbers per row in the carried state (h, and c for an LSTM)."""
        return self.hidden_size * (2 if self.cell == "lstm" else 1)

    def flatten_state(self, state: RNNState) -> Tensor:
        """state -> (B, state_size): [h, c] for an LSTM, h for a GRU."""
        return torch.cat([state.h, state.c], 1) if self.cell == "lstm" else state.h

    def unflatten_state(self, flat: Tensor, template: Optional[RNNState] = None) -> RNNState:
        """Inverse of ``flatten_state``; flat: (B, state_size)."""
        if self.cell == "lstm":
            h, c = flat.split(self.hidden_size, 1)
            return RNNState(h, c)
        return RNNState(flat, None)

    def forward(self, x: Tensor, state: Optional[RNNState] = None):
        weights = dict(self.rnn.named_parameters())
        if self.training and self.weight_dropout > 0:
            weights["weight_hh_l0"] = F.dropout(weights["weight_hh_l0"], self.weight_dropout, True)
        if state is None:
            hx = None
        elif self.cell == "lstm":  # a float32 carried state meets half-precision weights in their dtype
            hx = (state.h.unsqueeze(0).to(x.dtype), state.c.unsqueeze(0).to(x.dtype))
        else:
            hx = state.h.unsqueeze(0).to(x.dtype)
        out, last = functional_call(self.rnn, weights, (x, hx))
        if self.cell == "lstm":
            return out, RNNState(last[0][0], last[1][0])
        return out, RNNState(last[0], None)

    def extra_repr(self) -> str:
        return f"weight_dropout={self.weight_dropout}"
