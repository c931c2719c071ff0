"""A quasi-recurrent layer (Bradbury et al., 2017), as used by AWD-QRNN."""

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .fo_pool import fo_pool
from .regularizers import WeightDropLinear


class QRNNState(NamedTuple):
    """What one layer carries from one segment to the next.

    cell: (B, H) the last cell state c_T (not h_T).
    prev_x: (B, I) the layer's last input, for a window-2 layer (else None);
        never carries gradient into the previous segment.
    """

    cell: Tensor
    prev_x: Optional[Tensor]

    def detach(self) -> "QRNNState":
        return QRNNState(self.cell.detach(), None if self.prev_x is None else self.prev_x.detach())


class QRNNLayer(nn.Module):
    """One QRNN layer with fo-pooling (Bradbury et al., 2017;
    docs/method.md#the-awd-qrnn-language-model).

    A linear map of the window's inputs (x_t, and x_{t-1} when ``window`` is
    2) gives Z (tanh), F (sigmoid) and O (sigmoid); then
    c_t = f_t * z_t + (1 - f_t) * c_{t-1} (the forget-mult) and h_t = o_t * c_t.

    Args:
        input_size, hidden_size: I and H.
        window: 1 or 2 (``ValueError`` otherwise); with 2 the layer keeps its
            last input for the next segment, without gradient.
        zoneout: in training F is multiplied by a Bernoulli(1 - p) mask (a
            zero keeps the old state); in evaluation F is scaled by (1 - p).
        weight_dropout: DropConnect on the linear weight (training only).
        output_gate: h_t = o_t * c_t (True) or c_t (False).

    Inputs:
        x: (T, B, I); state: the previous segment's QRNNState or None (zeros).

    Outputs:
        (h (T, B, H), the QRNNState after step T). Its cell keeps its graph:
        detach it to truncate backpropagation.
    """

    State = QRNNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        window: int = 1,
        zoneout: float = 0.0,
        weight_dropout: float = 0.0,
        output_gate: bool = True,
    ):
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"QRNNLayer supports window 1 or 2, got {window}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.window = window
        self.zoneout = zoneout
        self.output_gate = output_gate
        gates = 3 if output_gate else 2
        self.linear = WeightDropLinear(window * input_size, gates * hidden_size, weight_dropout)

    @property
    def state_size(self) -> int:
        """Numbers per row in the carried state that gradients flow through (the cell)."""
        return self.hidden_size

    def flatten_state(self, state: QRNNState) -> Tensor:
        """state -> (B, H): the cell (prev_x carries no gradient)."""
        return state.cell

    def unflatten_state(self, flat: Tensor, template: Optional[QRNNState] = None) -> QRNNState:
        """(B, H) cell -> QRNNState, keeping ``template``'s prev_x (None: none)."""
        return QRNNState(flat, None if template is None else template.prev_x)

    def forward(self, x: Tensor, state: Optional[QRNNState] = None):
        if self.window == 2:
            prev = None if state is None else state.prev_x
            first = x[:1] * 0 if prev is None else prev.unsqueeze(0).detach().to(x.dtype)
            x_window = torch.cat([x, torch.cat([first, x[:-1]], 0)], 2)
        else:
            x_window = x
        linear = self.linear
        h, cell = self.pool(x_window, linear.dropped_weight(), linear.bias, None if state is None else state.cell)
        prev_x = x[-1].detach() if self.window == 2 else None
        return h, QRNNState(cell, prev_x)

    def pool(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], cell: Optional[Tensor] = None):
        """The layer's gates and fo-pooling (``fo_pool.py``) from the window's inputs
        x (T, B, I') with the gates' affine map ``weight`` (k * H, I'), ``bias``
        (k * H) or None; cell: (B, H) the previous cell state or None (zeros).
        Returns (h (T, B, H) in the gates' dtype, c_T (B, H), with graph); the
        cell states are float32 for half-precision gates."""
        return fo_pool(x, weight, bias, cell, self.zoneout, self.training, self.output_gate)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, window={self.window}, "
            f"zoneout={self.zoneout}, output_gate={self.output_gate}"
        )
