"""A stack of recurrent layers (QRNN, LSTM or GRU) with AWD dropouts and one state interface."""

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .qrnn import QRNNLayer
from .regularizers import locked_dropout
from .rnn import RNNLayer

CELLS = ("qrnn", "lstm", "gru")

State = List[tuple]  # one NamedTuple (QRNNState or RNNState) per layer


class RecurrentStack(nn.Module):
    """``num_layers`` layers of ``cell``: input_size -> hidden_size -> ... -> output_size.

    As in AWD: locked dropout ``dropout_hidden`` between layers, DropConnect
    ``weight_drop`` (QRNN: its linear weight; LSTM/GRU: the hidden-to-hidden
    weight), a window of 2 on the first QRNN layer, ``zoneout`` on QRNN forget
    gates. The state of the whole stack is a list of per-layer NamedTuples;
    ``pack``/``unpack`` view the part that carries gradient as one (B, S)
    matrix (QRNN: the cells; LSTM: h and c; GRU: h), S = sum(state_sizes).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, num_layers: int,
                 dropout_hidden: float = 0.0, weight_drop: float = 0.0, zoneout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(CELLS)}")
        self.cell, self.dropout_hidden = cell, dropout_hidden
        sizes = [hidden_size] * (num_layers - 1) + [output_size]
        inputs = [input_size] + sizes[:-1]
        if cell == "qrnn":
            layers = (QRNNLayer(i, h, window=2 if n == 0 else 1, zoneout=zoneout, weight_dropout=weight_drop)
                      for n, (i, h) in enumerate(zip(inputs, sizes)))
        else:
            layers = (RNNLayer(i, h, cell, weight_dropout=weight_drop) for i, h in zip(inputs, sizes))
        self.layers = nn.ModuleList(layers)

    @property
    def state_sizes(self) -> List[int]:
        """Numbers per row that each layer's state contributes to ``pack``."""
        return [layer.state_size for layer in self.layers]

    def forward(self, x: Tensor, state: Optional[State] = None):
        """x: (T, B, I); state: per-layer states or None (zeros).

        Returns (the last layer's output (T, B, O), the per-layer states after
        step T, with graph).
        """
        final = []
        for n, layer in enumerate(self.layers):
            x, layer_state = layer(x, None if state is None else state[n])
            final.append(layer_state)
            if n < len(self.layers) - 1:
                x = locked_dropout(x, self.dropout_hidden, self.training)
        return x, final

    def pack(self, state: State) -> Tensor:
        """Per-layer states -> (B, S)."""
        return torch.cat([layer.flatten_state(s) for layer, s in zip(self.layers, state)], 1)

    def unpack(self, flat: Tensor, template: Optional[State] = None) -> State:
        """(B, S) -> per-layer states; non-gradient parts (a QRNN's previous
        input) come from ``template`` (None: none)."""
        parts = flat.split(self.state_sizes, 1)
        template = template or [None] * len(self.layers)
        return [layer.unflatten_state(p, t) for layer, p, t in zip(self.layers, parts, template)]


def map_state(state: Sequence[tuple], fn: Callable[[Tensor], Tensor]) -> State:
    """Apply ``fn`` to every tensor of every layer's state (None stays None)."""
    return [type(s)(*(None if t is None else fn(t) for t in s)) for s in state]
