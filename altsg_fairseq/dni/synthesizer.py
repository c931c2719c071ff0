"""The element-wise recurrent synthesizer of the gradient at a carried state.

Given a language model's carried state, (B, S) numbers, the synthesizer
predicts the gradient of the loss with respect to every one of them. Each
number is treated alone ("element-wise", feature size 1): multiplied by noise
from Normal(1, ``noise_std``) in training, mapped by Linear(1, hidden)
(``input_map``), run through a recurrent core and mapped back by
Linear(hidden, 1) (``output_map``) (docs/method.md#the-synthesizer).

Cores (``core``):
  * ``qrnn``: the B * S elements form ONE sequence (batch 1), so the
    recurrence runs across the elements; first layer window 2, zoneout 0.1.
  * ``lstm`` / ``gru``: every state element is its own batch item, with its
    own recurrent state carried from call to call (a sequence of length 1).
The core's recurrent state persists across calls (detached each time) until
``reset_state()``.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modules.qrnn import QRNNLayer, QRNNState

CORES = ("qrnn", "lstm", "gru")  # the order of modules.CELLS


class Synthesizer(nn.Module):
    """Predicts the gradient of the loss at every number of a carried state.

    Args:
        core: the recurrent core, one of ``CORES`` (``ValueError`` otherwise).
        hidden: the core's hidden size (alternate_sg's ``--sg_hidden_num``, 50).
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

    def __init__(
        self,
        core: str = "qrnn",
        hidden: int = 50,
        layers: int = 1,
        dropout: float = 0.1,
        noise_std: float = 0.5,
        zoneout: float = 0.1,
    ):
        super().__init__()
        if core not in CORES:
            raise ValueError(f"unknown synthesizer core {core!r}; choose one of {', '.join(CORES)}")
        if hidden < 1 or layers < 1:
            raise ValueError(f"the synthesizer's hidden size and layers must be at least 1, got {hidden} and {layers}")
        self.core_type, self.hidden, self.num_layers = core, hidden, layers
        self.dropout, self.noise_std = dropout, noise_std
        self.input_map = nn.Linear(1, hidden)
        self.output_map = nn.Linear(hidden, 1)
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
        for linear in (self.input_map, self.output_map):
            nn.init.uniform_(linear.weight, -0.1, 0.1)
            nn.init.zeros_(linear.bias)
        self.state = None

    @property
    def config(self) -> dict:
        """What a saved synthesizer must match to be loaded into this one."""
        return {"core": self.core_type, "hidden": self.hidden, "layers": self.num_layers}

    # checkpoints written before input_map / output_map were named so
    _OLD_NAMES = (("encoder.", "input_map."), ("decoder.", "output_map."))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loads a state dict with the old names (encoder.*, decoder.*) as well: renames them first."""
        for old, new in self._OLD_NAMES:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        """Inverse of ``recurrent_state``; tensors move to this module's device (the None
        of a QRNN layer that keeps no previous input stays None)."""
        device = self.input_map.weight.device
        tensors = [None if t is None else t.to(device) for t in tensors]
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
        h = self._run_qrnn(values) if self.core_type == "qrnn" else self._run_rnn(values)
        return self.output_map(h).view_as(carried)

    def _run_qrnn(self, values: Tensor) -> Tensor:
        """values: (N, 1), one sequence of N elements. Returns (N, hidden)."""
        state = self.state or [None] * len(self.core)
        new_state = []
        x = None
        for n, layer in enumerate(self.core):
            if n == 0:
                x, s = self._first_qrnn_layer(layer, values, state[0])
            else:
                x, s = layer(x, state[n])
            new_state.append(s.detach())
            if n < len(self.core) - 1:
                x = F.dropout(x, self.dropout, self.training)
        self.state = new_state
        return x.squeeze(1)

    def _first_qrnn_layer(self, layer: QRNNLayer, values: Tensor, state: Optional[QRNNState]):
        """The first QRNN layer applied to x_t = input_map(v_t), without forming x.

        Its gates' pre-activations W [x_t; x_{t-1}] + b are affine in (v_t, v_{t-1}),
        as input_map maps one number: W1 (v_t w + e) + W2 (v_{t-1} w + e) + b
        = v_t (W1 w) + v_{t-1} (W2 w) + (W1 e + b) + W2 e, where x_{-1} is the last
        call's last input (zeros at first). So they are the (N, 5) columns
        [v_t, v_{t-1}, 1, t > 0, t == 0] times five rows of 3 x hidden numbers
        (the layer's pool takes them as its inputs and weight): the same values as
        layer(x, state), and (N, 5) x (5, 3 hidden) work instead of
        (N, 2 hidden) x (2 hidden, 3 hidden).
        values: (N, 1). Returns (h (N, 1, hidden), QRNNState).
        """
        hidden = self.hidden
        weight, bias = layer.linear.weight, layer.linear.bias  # no weight drop in the synthesizer's core
        w, e = self.input_map.weight[:, 0], self.input_map.bias
        w1, w2 = weight[:, :hidden], weight[:, hidden:]
        previous = None if state is None or state.prev_x is None else state.prev_x.detach().reshape(-1)
        rows = torch.stack(
            [w1 @ w, w2 @ w, w1 @ e + bias, w2 @ e, torch.zeros_like(bias) if previous is None else w2 @ previous]
        )  # (5, 3 hidden)
        v = values[:, 0]
        later = torch.ones_like(v)
        later[0] = 0
        columns = torch.stack([v, torch.cat([v.new_zeros(1), v[:-1]]), torch.ones_like(v), later, 1 - later], 1)
        # the layer's gates, as its own map would give them: (N, 1, 5) inputs, (3 hidden, 5) weight
        h, cell = layer.pool(columns.unsqueeze(1), rows.t(), None, None if state is None else state.cell)
        prev_x = (v[-1] * w + e).detach().unsqueeze(0)  # (1, hidden): the last x_t, as layer() keeps it
        return h, QRNNState(cell, prev_x)

    def _run_rnn(self, values: Tensor) -> Tensor:
        """values: (N, 1), N batch items of one step each. Returns (N, hidden).

        The core's equations (torch.nn.GRU's / LSTM's, with its parameters),
        written out so that the first layer's input projection W_ih x + b_ih of
        x = input_map(v) = v w + e is the rank-1 (W_ih w) v + (W_ih e + b_ih): an
        (N, 2) x (2, gates) product instead of (N, hidden) x (hidden, gates).
        """
        n_items = values.size(0)
        previous = self.state if self._state_fits(n_items) else None
        lstm = self.core_type == "lstm"
        hs, cs, x = [], [], None
        for n in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(self.core, f"{k}_l{n}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            if n == 0:
                w, e = self.input_map.weight[:, 0], self.input_map.bias
                projection = torch.stack([w_ih @ w, w_ih @ e + b_ih])  # (2, gates)
                gi = torch.cat([values, torch.ones_like(values)], 1) @ projection
            else:
                x = F.dropout(x, self.dropout, self.training)
                gi = torch.addmm(b_ih, x, w_ih.t())
            h_prev = None if previous is None else (previous[0] if lstm else previous)[n]
            gh = b_hh.expand_as(gi) if h_prev is None else torch.addmm(b_hh, h_prev, w_hh.t())
            if lstm:
                i, f, g, o = (gi + gh).chunk(4, 1)
                c = torch.sigmoid(i) * torch.tanh(g)
                if previous is not None:
                    c = c + torch.sigmoid(f) * previous[1][n]
                x = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            else:
                ir, iz, i_n = gi.chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                z = torch.sigmoid(iz + hz)
                candidate = torch.tanh(i_n + torch.sigmoid(ir + hr) * hn)
                x = (1 - z) * candidate if h_prev is None else candidate + z * (h_prev - candidate)
            hs.append(x)
        h = torch.stack(hs).detach()
        self.state = (h, torch.stack(cs).detach()) if lstm else h
        return x

    def _state_fits(self, n: int) -> bool:
        if self.state is None:
            return False
        h = self.state[0] if isinstance(self.state, tuple) else self.state
        return h.size(1) == n

    def extra_repr(self) -> str:
        return f"core={self.core_type}, hidden={self.hidden}, layers={self.num_layers}, noise_std={self.noise_std}"
