"""The element-wise recurrent synthesizer of the gradient at a carried state.

Given a language model's carried state, (B, S) numbers, the synthesizer
predicts the gradient of the loss with respect to every one of them. Each
number is treated alone ("element-wise", feature size 1): multiplied by noise
from Normal(1, ``noise_std``) in training, mapped by Linear(1, hidden), run
through a recurrent core and mapped back by Linear(hidden, 1) (reference
section 4).

Cores (``core``):
  * ``gru`` / ``lstm``: every state element is its own batch item, with its
    own recurrent state carried from call to call (a sequence of length 1).
  * ``qrnn``: the B * S elements form ONE sequence (batch 1), so the
    recurrence runs across the elements; first layer window 2, zoneout 0.1.
The core's recurrent state persists across calls (detached each time) until
``reset_state()``.
"""

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modules.qrnn import QRNNLayer, QRNNState

CORES = ("qrnn", "gru", "lstm")


class Synthesizer(nn.Module):
    """Predicts the gradient of the loss at every number of a carried state.

    Args:
        core: the recurrent core, one of ``CORES`` (``ValueError`` otherwise).
        hidden: the core's hidden size (the seed's ``--sg_hidden_num``, 50).
        layers: the core's layers (``--sg_nlayers``, 1).
        dropout: dropout between the core's layers in training.
        noise_std: std of the multiplicative Normal(1, std) input noise in
            training (0: none).
        zoneout: zoneout on the QRNN core's forget gates.

    Inputs:
        carried: (B, S) carried-state values (any B, S; detached by the caller).

    Outputs:
        (B, S) synthetic gradients, one per input number. The core's
        recurrent state after the call is kept (detached) for the next call.
    """

    def __init__(self, core: str = "qrnn", hidden: int = 50, layers: int = 1, dropout: float = 0.1,
                 noise_std: float = 0.5, zoneout: float = 0.1):
        super().__init__()
        if core not in CORES:
            raise ValueError(f"unknown synthesizer core {core!r}; choose one of {', '.join(CORES)}")
        if hidden < 1 or layers < 1:
            raise ValueError(f"the synthesizer's hidden size and layers must be at least 1, got {hidden} and {layers}")
        self.core_type, self.hidden, self.num_layers = core, hidden, layers
        self.dropout, self.noise_std = dropout, noise_std
        self.encoder = nn.Linear(1, hidden)
        self.decoder = nn.Linear(hidden, 1)
        if core == "qrnn":
            self.core = nn.ModuleList(
                QRNNLayer(hidden, hidden, window=2 if n == 0 else 1, zoneout=zoneout) for n in range(layers)
            )
        else:
            rnn = nn.GRU if core == "gru" else nn.LSTM
            self.core = rnn(hidden, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
            for name, weight in self.core.named_parameters():
                if name.startswith("weight"):
                    nn.init.orthogonal_(weight)
        for linear in (self.encoder, self.decoder):
            nn.init.uniform_(linear.weight, -0.1, 0.1)
            nn.init.zeros_(linear.bias)
        self.state = None

    @property
    def config(self) -> dict:
        """What a saved synthesizer must match to be loaded into this one."""
        return {"core": self.core_type, "hidden": self.hidden, "layers": self.num_layers}

    def reset_state(self) -> None:
        self.state = None

    def recurrent_state(self) -> List[Tensor]:
        """The core's carried state as a plain list of tensors (for checkpoints)."""
        if self.state is None:
            return []
        if self.core_type == "qrnn":
            return [t for s in self.state for t in (s.cell, s.prev_x)]
        return list(self.state) if isinstance(self.state, tuple) else [self.state]

    def load_recurrent_state(self, tensors: List[Tensor]) -> None:
        """Inverse of ``recurrent_state``; tensors move to this module's device."""
        device = self.encoder.weight.device
        tensors = [t.to(device) for t in tensors]
        if not tensors:
            self.state = None
        elif self.core_type == "qrnn":
            self.state = [QRNNState(c, x) for c, x in zip(tensors[::2], tensors[1::2])]
        else:
            self.state = tuple(tensors) if self.core_type == "lstm" else tensors[0]

    def forward(self, carried: Tensor) -> Tensor:
        values = carried.reshape(-1, 1)
        if self.training and self.noise_std > 0:
            values = values * torch.empty_like(values).normal_(1.0, self.noise_std)
        h = self.encoder(values)  # (N, hidden)
        if self.core_type == "qrnn":
            h = self._run_qrnn(h.unsqueeze(1)).squeeze(1)
        else:
            h = self._run_rnn(h.unsqueeze(1)).squeeze(1)
        return self.decoder(h).view_as(carried)

    def _run_qrnn(self, x: Tensor) -> Tensor:
        """x: (N, 1, hidden), one sequence of N elements."""
        state = self.state or [None] * len(self.core)
        new_state = []
        for n, layer in enumerate(self.core):
            x, s = layer(x, state[n])
            new_state.append(s.detach())
            if n < len(self.core) - 1:
                x = F.dropout(x, self.dropout, self.training)
        self.state = new_state
        return x

    def _run_rnn(self, x: Tensor) -> Tensor:
        """x: (N, 1, hidden), N batch items of one step each."""
        state = self.state if self._state_fits(x.size(0)) else None
        out, new_state = self.core(x, state)
        self.state = tuple(s.detach() for s in new_state) if isinstance(new_state, tuple) else new_state.detach()
        return out

    def _state_fits(self, n: int) -> bool:
        if self.state is None:
            return False
        h = self.state[0] if isinstance(self.state, tuple) else self.state
        return h.size(1) == n

    def extra_repr(self) -> str:
        return f"core={self.core_type}, hidden={self.hidden}, layers={self.num_layers}, noise_std={self.noise_std}"
