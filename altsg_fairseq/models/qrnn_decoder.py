"""The decoder of ``qrnn_lm``: embedding -> recurrent layers -> tied softmax, owning its carried state."""

from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
from fairseq.models import FairseqIncrementalDecoder
from fairseq.modules import AdaptiveSoftmax
from torch import Tensor, nn

from ..errors import UsageError
from ..modules import RecurrentStack, embedding_dropout, kept_state, locked_dropout, state_dtype

# The recurrence reads sequences of any length. fairseq wants a number from a
# decoder (its SequenceGenerator takes min() over the models' limits), so "no
# limit" is this one, and the task says the same (AlternatingLMTask.max_positions).
NO_LENGTH_LIMIT = 10**9

# the vocabulary sizes above which the original code (AWD) splits its softmax, and its cutoffs
SPLIT_SOFTMAX = [(500_000, [4200, 35000, 180000]), (75_000, [2800, 20000, 76000])]


def softmax_cutoffs(spec: Optional[str], vocab: int) -> List[int]:
    """The adaptive softmax cutoffs for ``spec`` and a ``vocab``-type dictionary ([]: full softmax)."""
    if spec is None or spec == "auto":
        cutoffs = next((c for size, c in SPLIT_SOFTMAX if vocab > size), [])
    elif spec == "none":
        cutoffs = []
    else:
        try:
            cutoffs = [int(c) for c in spec.split(",")]
        except ValueError:
            raise UsageError(
                f"--adaptive-softmax-cutoff takes comma-separated integers, 'auto' or 'none', got {spec!r}"
            ) from None
        if any(c <= 0 for c in cutoffs) or cutoffs != sorted(set(cutoffs)) or cutoffs[-1] >= vocab:
            raise UsageError(
                f"--adaptive-softmax-cutoff {spec}: cutoffs must be increasing, positive and below the {vocab:,} dictionary entries"
            )
    return [c for c in cutoffs if c < vocab]


class QRNNDecoder(FairseqIncrementalDecoder):
    """Embedding -> recurrent layers -> output tied to the embedding (or an adaptive softmax).

    The recurrent state of every stream (a split being trained on or scored)
    is carried from one window to the next inside the decoder, so that
    fairseq's scorers, which call the model once per batch, see contiguous
    text with carried state. Calls without a stream start from zeros and
    carry nothing. In generation (``incremental_state`` given) the state
    after the tokens seen so far is kept there, so that every step runs the
    new token only.

    The carried state's public interface: ``state_sizes`` (numbers per row
    of each layer) and ``state_size`` (S, their sum),
    ``start_state`` (a stream's next start state as one flat (B, S) tensor),
    ``flatten_state`` (per-layer states -> (B, S)), and
    ``carried_state_dict`` / ``load_carried_state_dict`` (checkpoints). A
    flat state holds the numbers gradients flow through (QRNN: the cells;
    LSTM: h and c; GRU: h); the rest (a window-2 QRNN's previous input) stays
    with the stream. Carried states are float32 for a model in float32, also
    under mixed precision.

    Precision: ``use_autocast(dtype)`` runs every forward pass under
    ``torch.autocast`` (bfloat16 on a CPU): matrix products in ``dtype``;
    weights, recurrent cell states and the carried state stay float32, and
    losses are left to the caller (in float32: the criterion and fairseq's
    normalized probabilities upcast the logits).

    Args:
        cfg: the model's config (``QRNNLanguageModelConfig``).
        dictionary: fairseq's ``Dictionary`` (V entries).

    Inputs:
        src_tokens: (B, T) token ids.
        stream: the name of the carried state to continue (None: start from
            zeros, carry nothing); reset: start that stream afresh.
        state: (B, S) a flat start state overriding the stream's carried one
            (e.g. to attach synthetic gradients to it); the stream's
            non-gradient parts still apply.
        incremental_state: generation's per-hypothesis store; src_tokens is
            then the whole prefix so far and only the tokens after the stored
            state are run.

    Outputs:
        (logits (B, T', V), extra), T' the positions run (features (B, T', E)
        instead of logits with an adaptive softmax, in the weights' dtype);
        the logits are in the autocast dtype under ``use_autocast``. extra: "initial_state"
        and "final_state" (per-layer states, with graph), "raw_last"
        (T', B, E: the last layer's output) and "dropped_last" (the same
        after the output dropout). The final state is carried (detached) for
        the stream's next window.
    """

    def __init__(self, cfg, dictionary):
        super().__init__(dictionary)
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(len(dictionary), cfg.embed_dim)
        self.rnn = RecurrentStack(
            str(cfg.rnn_type),
            cfg.embed_dim,
            cfg.hidden_dim,
            cfg.embed_dim,
            cfg.num_layers,
            cfg.dropout_hidden,
            cfg.weight_drop,
            cfg.zoneout,
        )
        cutoffs = softmax_cutoffs(cfg.adaptive_softmax_cutoff, len(dictionary))
        self.adaptive_softmax = None
        if cutoffs:
            self.adaptive_softmax = AdaptiveSoftmax(
                len(dictionary),
                cfg.embed_dim,
                cutoffs,
                cfg.adaptive_softmax_dropout,
                factor=cfg.adaptive_softmax_factor,
            )
        else:
            self.output_bias = nn.Parameter(torch.zeros(len(dictionary)))
        self._carried: Dict[str, list] = {}
        self.autocast_dtype: Optional[torch.dtype] = None
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)

    def use_autocast(self, dtype: Optional[torch.dtype]) -> None:
        """Run every forward pass under ``torch.autocast`` of the input's device
        with ``dtype`` (e.g. torch.bfloat16 on a CPU); None: in the precision
        the caller runs it (fairseq's own --amp / --fp16 on a GPU)."""
        self.autocast_dtype = dtype

    # ---- the carried state ------------------------------------------------------

    @property
    def state_sizes(self) -> List[int]:
        """Numbers per row that each layer contributes to a flat state."""
        return self.rnn.state_sizes

    @property
    def state_size(self) -> int:
        """S: numbers per row of a flat state."""
        return sum(self.rnn.state_sizes)

    def start_state(self, stream: str, reset: bool, batch_size: int) -> Tensor:
        """The flat state (batch_size, S) the next window of ``stream`` starts
        from: zeros before its first window or at a ``reset`` (which forgets
        the stream's carried state)."""
        carried = self._stream_state(stream, reset)
        if carried is None:
            return self.embed_tokens.weight.new_zeros(
                batch_size, self.state_size, dtype=state_dtype(self.embed_tokens.weight.dtype)
            )
        return self.rnn.pack(carried)

    def flatten_state(self, state: list) -> Tensor:
        """Per-layer states (e.g. extra["final_state"]) -> (B, S), keeping the graph."""
        return self.rnn.pack(state)

    def carried_state_dict(self, stream: str) -> Optional[list]:
        """The carried state of ``stream`` as a list per layer of tensors (None
        for parts a layer lacks), or None when nothing is carried."""
        carried = self._carried.get(stream)
        return None if carried is None else self.rnn.state_tensors(carried)

    def load_carried_state_dict(self, stream: str, tensors: list) -> None:
        """Inverse of ``carried_state_dict``: the tensors take the model's dtype and device."""
        self._carried[stream] = self.rnn.state_from_tensors(tensors, like=self.embed_tokens.weight)

    def _stream_state(self, stream: Optional[str], reset: bool) -> Optional[list]:
        if stream is None:
            return None
        if reset:
            self._carried.pop(stream, None)
        return self._carried.get(stream)

    # ---- forward ------------------------------------------------------------------

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        stream: Optional[str] = None,
        reset: bool = False,
        state: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **unused,
    ):
        prefix_length = src_tokens.size(1)
        if incremental_state is not None:
            start, src_tokens = self._resume(incremental_state, src_tokens)
        else:
            carried = self._stream_state(stream, reset)
            start = carried if state is None else self.rnn.unpack(state, carried)
        precision = (
            nullcontext()
            if self.autocast_dtype is None
            else torch.autocast(src_tokens.device.type, dtype=self.autocast_dtype)
        )
        with precision:
            x = embedding_dropout(self.embed_tokens, src_tokens.t(), self.cfg.dropout_embed, self.training)
            x = locked_dropout(x, self.cfg.dropout_input, self.training)
            x, final_state = self.rnn(x, start)
            dropped = locked_dropout(x, self.cfg.dropout, self.training)
            out = dropped.transpose(0, 1)
            if self.adaptive_softmax is None:
                out = self.output_layer(out)
                if incremental_state is not None:
                    # fairseq's generator divides these in place by the temperature: half-precision
                    # logits would overflow at a low one
                    out = out.float()
            else:  # fairseq's adaptive softmax runs after this, outside autocast
                out = out.to(self.embed_tokens.weight.dtype)
        if stream is not None:
            self._carried[stream] = kept_state(final_state)
        if incremental_state is not None:
            self._store(incremental_state, final_state, prefix_length)
        extra = {
            "initial_state": start,
            "final_state": final_state,
            "raw_last": x,
            "dropped_last": dropped,
            "attn": None,
        }
        return out, extra

    def output_layer(self, features: Tensor) -> Tensor:
        """features: (B, T, E) -> logits (B, T, V), tied to the embedding."""
        return nn.functional.linear(features, self.embed_tokens.weight, self.output_bias)

    # ---- generation: the state after the prefix lives in incremental_state ----

    def _resume(self, incremental_state, tokens: Tensor):
        """(the state stored after the tokens run so far or None, the tokens not yet run)."""
        saved = self.get_incremental_state(incremental_state, "state")
        if not saved:
            return None, tokens
        tensors = []
        for n in range(len(self.state_sizes)):
            parts = []
            while f"{n}.{len(parts)}" in saved:
                parts.append(saved[f"{n}.{len(parts)}"])
            tensors.append(parts)
        return self.rnn.state_from_tensors(tensors, like=self.embed_tokens.weight), tokens[:, int(saved["ran"]) :]

    def _store(self, incremental_state, final_state, ran: int) -> None:
        saved: Dict[str, Optional[Tensor]] = {"ran": torch.tensor(ran)}
        for n, parts in enumerate(self.rnn.state_tensors(kept_state(final_state))):
            for i, t in enumerate(parts):
                saved[f"{n}.{i}"] = t
        self.set_incremental_state(incremental_state, "state", saved)

    def reorder_incremental_state(self, incremental_state, new_order: Tensor) -> None:
        saved = self.get_incremental_state(incremental_state, "state")
        if not saved:
            return
        for key, t in saved.items():
            if t is not None and t.dim() == 2:  # the per-row state tensors (B, H)
                saved[key] = t.index_select(0, new_order)
        self.set_incremental_state(incremental_state, "state", saved)

    def max_positions(self):
        return NO_LENGTH_LIMIT
