"""A stack of recurrent layers (QRNN, LSTM or GRU) with AWD dropouts and one state interface."""

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .forget_mult import state_dtype
from .qrnn import QRNNLayer
from .regularizers import locked_dropout
from .rnn import RNNLayer

CELLS = ("qrnn", "lstm", "gru")

State = List[tuple]  # one NamedTuple (QRNNState or RNNState) per layer


class RecurrentStack(nn.Module):
    """``num_layers`` recurrent layers with the AWD regularisers (docs/method.md#the-awd-qrnn-language-model).

    The state of the whole stack is a list of per-layer NamedTuples (QRNNState
    or RNNState). ``pack``/``unpack`` view the part that carries gradient as
    one flat (B, S) matrix (QRNN: the cells; LSTM: h and c; GRU: h),
    S = sum(state_sizes); ``state_tensors``/``state_from_tensors`` turn a
    state into plain lists of tensors and back (checkpoints, generation).

    Args:
        cell: ``"qrnn"``, ``"lstm"`` or ``"gru"`` (``ValueError`` otherwise).
        input_size, hidden_size, output_size: sizes input -> hidden -> ...
            -> hidden -> output over the layers.
        num_layers: the number of layers.
        dropout_hidden: locked dropout between layers (training only).
        weight_drop: DropConnect on the QRNN linear weights or the LSTM/GRU
            hidden-to-hidden weights.
        zoneout: zoneout on the QRNN forget gates. The first QRNN layer has a
            window of 2.

    Inputs:
        x: (T, B, input_size); state: per-layer states, or None (zeros).

    Outputs:
        (the last layer's output (T, B, output_size), the per-layer states
        after step T, with graph).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int,
        dropout_hidden: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(CELLS)}")
        self.cell, self.dropout_hidden = cell, dropout_hidden
        sizes = [hidden_size] * (num_layers - 1) + [output_size]
        inputs = [input_size] + sizes[:-1]
        if cell == "qrnn":
            layers = (
                QRNNLayer(i, h, window=2 if n == 0 else 1, zoneout=zoneout, weight_dropout=weight_drop)
                for n, (i, h) in enumerate(zip(inputs, sizes))
            )
        else:
            layers = (RNNLayer(i, h, cell, weight_dropout=weight_drop) for i, h in zip(inputs, sizes))
        self.layers = nn.ModuleList(layers)

    @property
    def state_sizes(self) -> List[int]:
        """Numbers per row that each layer's state contributes to ``pack``."""
        return [layer.state_size for layer in self.layers]

    def forward(self, x: Tensor, state: Optional[State] = None):
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

    @staticmethod
    def state_tensors(state: State) -> List[List[Optional[Tensor]]]:
        """Per-layer states -> a list per layer of its tensors (None for a part a layer lacks)."""
        return [list(s) for s in state]

    def state_from_tensors(self, tensors: Sequence[Sequence[Optional[Tensor]]], like: Tensor) -> State:
        """Inverse of ``state_tensors``; the tensors go to the device of ``like``,
        in the dtype states are kept in for ``like``'s (``state_dtype``: float32 for half precision)."""
        dtype = state_dtype(like.dtype)
        return [
            layer.State(*(None if t is None else t.to(device=like.device, dtype=dtype) for t in parts))
            for layer, parts in zip(self.layers, tensors)
        ]


def map_state(state: Sequence[tuple], fn: Callable[[Tensor], Tensor]) -> State:
    """Apply ``fn`` to every tensor of every layer's state (None stays None)."""
    return [type(s)(*(None if t is None else fn(t) for t in s)) for s in state]


def kept_state(state: Sequence[tuple]) -> State:
    """A state as it is carried to the next window: detached, in ``state_dtype``
    (an LSTM/GRU under autocast computes its states in bfloat16/float16)."""
    return map_state(state, lambda t: t.detach().to(state_dtype(t.dtype)))
