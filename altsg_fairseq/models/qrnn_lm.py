"""``qrnn_lm``: the AWD-style QRNN (or LSTM/GRU) language model with carried state."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (
    FairseqIncrementalDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.modules import AdaptiveSoftmax
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from ..errors import UsageError
from ..modules import CELLS, RecurrentStack, embedding_dropout, locked_dropout, map_state
from ..tasks.alternating_lm import AlternatingLMTask

# the vocabulary sizes above which the seed (AWD) splits its softmax, and its cutoffs
SPLIT_SOFTMAX = [(500_000, [4200, 35000, 180000]), (75_000, [2800, 20000, 76000])]


@dataclass
class QRNNLanguageModelConfig(FairseqDataclass):
    rnn_type: ChoiceEnum(CELLS) = field(default="qrnn", metadata={"help": "recurrent core (the seed's --model QRNN|LSTM|GRU); weight drop acts on the QRNN linear weights or the LSTM/GRU hidden-to-hidden weights"})
    embed_dim: int = field(default=256, metadata={"help": "embedding size (the seed's --emsize); the last layer has this size, as input and output embeddings are tied"})
    hidden_dim: int = field(default=256, metadata={"help": "hidden size of every recurrent layer but the last (--nhid)"})
    num_layers: int = field(default=2, metadata={"help": "number of recurrent layers (--nlayers)"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last layer's output (--dropout)"})
    dropout_hidden: float = field(default=0.3, metadata={"help": "locked dropout between recurrent layers (--dropouth)"})
    dropout_input: float = field(default=0.4, metadata={"help": "locked dropout on the embedded input (--dropouti)"})
    dropout_embed: float = field(default=0.1, metadata={"help": "embedding dropout: drops whole word rows of the table (--dropoute)"})
    weight_drop: float = field(default=0.1, metadata={"help": "DropConnect on the recurrent weights (--wdrop)"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout on the QRNN forget gates (QRNN only)"})
    adaptive_softmax_cutoff: Optional[str] = field(default=None, metadata={"help": "comma-separated cutoffs of fairseq's adaptive softmax, e.g. 2800,20000,76000 (the output is then not tied to the embedding); 'auto' (also when unset): full softmax below 75,000 types, the seed's split points above; 'none': always the full softmax"})
    adaptive_softmax_dropout: float = field(default=0.0, metadata={"help": "dropout in the adaptive softmax's tail projections"})
    adaptive_softmax_factor: float = field(default=4.0, metadata={"help": "each adaptive softmax tail cluster's projection is this factor smaller than the previous one"})


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
            raise UsageError(f"--adaptive-softmax-cutoff takes comma-separated integers, 'auto' or 'none', got {spec!r}") from None
        if any(c <= 0 for c in cutoffs) or cutoffs != sorted(set(cutoffs)) or cutoffs[-1] >= vocab:
            raise UsageError(f"--adaptive-softmax-cutoff {spec}: cutoffs must be increasing, positive and below the {vocab:,} dictionary entries")
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
    """

    def __init__(self, cfg: QRNNLanguageModelConfig, dictionary):
        super().__init__(dictionary)
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(len(dictionary), cfg.embed_dim)
        self.rnn = RecurrentStack(str(cfg.rnn_type), cfg.embed_dim, cfg.hidden_dim, cfg.embed_dim, cfg.num_layers,
                                  cfg.dropout_hidden, cfg.weight_drop, cfg.zoneout)
        cutoffs = softmax_cutoffs(cfg.adaptive_softmax_cutoff, len(dictionary))
        self.adaptive_softmax = None
        if cutoffs:
            self.adaptive_softmax = AdaptiveSoftmax(len(dictionary), cfg.embed_dim, cutoffs,
                                                    cfg.adaptive_softmax_dropout, factor=cfg.adaptive_softmax_factor)
        else:
            self.output_bias = nn.Parameter(torch.zeros(len(dictionary)))
        self.carried: Dict[str, list] = {}
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)

    @property
    def state_sizes(self) -> List[int]:
        """Numbers per row that each layer's carried state holds (see RecurrentStack.pack)."""
        return self.rnn.state_sizes

    def carried_state(self, stream: str, reset: bool) -> Optional[list]:
        """The state the next window of ``stream`` starts from (None: zeros)."""
        if reset:
            self.carried.pop(stream, None)
        return self.carried.get(stream)

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        stream: Optional[str] = None,
        reset: bool = False,
        state: Optional[list] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **unused,
    ):
        """src_tokens: (B, T).

        ``stream`` names the carried state to continue (None: start from
        zeros, carry nothing) and ``reset`` starts it afresh. ``state`` (one
        state per layer) overrides the carried state, e.g. to attach
        synthetic gradients to it. The final state is carried (detached) for
        the next window of the same stream. With ``incremental_state``
        (generation), src_tokens is the whole prefix so far and only the
        tokens after the stored state are run.

        Returns (logits (B, T', V), extra), T' the positions run (features
        (B, T', E) instead of logits with an adaptive softmax); extra holds
        "initial_state" and "final_state" (per-layer states, with graph),
        "raw_last" (T', B, E: the last layer's output) and "dropped_last"
        (the same after the output dropout).
        """
        prefix_length = src_tokens.size(1)
        if incremental_state is not None:
            state, src_tokens = self._resume(incremental_state, src_tokens)
        elif state is None and stream is not None:
            state = self.carried_state(stream, reset)
        x = embedding_dropout(self.embed_tokens, src_tokens.t(), self.cfg.dropout_embed, self.training)
        x = locked_dropout(x, self.cfg.dropout_input, self.training)
        x, final_state = self.rnn(x, state)
        dropped = locked_dropout(x, self.cfg.dropout, self.training)
        if stream is not None:
            self.carried[stream] = map_state(final_state, Tensor.detach)
        if incremental_state is not None:
            self._store(incremental_state, final_state, prefix_length)
        out = dropped.transpose(0, 1)
        if self.adaptive_softmax is None:
            out = self.output_layer(out)
        extra = {"initial_state": state, "final_state": final_state, "raw_last": x, "dropped_last": dropped, "attn": None}
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
        states = [
            layer.State(*(saved[f"{n}.{i}"] for i in range(len(layer.State._fields))))
            for n, layer in enumerate(self.rnn.layers)
        ]
        return states, tokens[:, int(saved["ran"]):]

    def _store(self, incremental_state, final_state, ran: int) -> None:
        saved: Dict[str, Optional[Tensor]] = {"ran": torch.tensor(ran)}
        for n, s in enumerate(final_state):
            for i, t in enumerate(s):
                saved[f"{n}.{i}"] = None if t is None else t.detach()
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
        return int(1e9)

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints from before the LSTM/GRU cores kept the layers at decoder.layers."""
        prefix = f"{name}." if name else ""
        for key in [k for k in state_dict if k.startswith(f"{prefix}layers.")]:
            state_dict[f"{prefix}rnn.{key[len(prefix):]}"] = state_dict.pop(key)
        return state_dict


@register_model("qrnn_lm", dataclass=QRNNLanguageModelConfig)
class QRNNLanguageModel(FairseqLanguageModel):
    """AWD-style QRNN language model (Merity et al.) with tied embeddings;
    ``--rnn-type lstm|gru`` gives the AWD-LSTM/GRU with the same dropouts.

    Architectures: ``qrnn_lm`` (the config defaults: 2 x 256, fast on a CPU),
    ``qrnn_lm_ptb`` and ``qrnn_lm_wt2`` (the seed's 4 x 1550, emsize 400).
    """

    def __init__(self, decoder):
        super().__init__(decoder)
        # (get, set) callables of the task: training state kept in the
        # model's checkpoint entry, e.g. the synthesizer and its optimizer
        self.extra_state_hooks = None
        # the task's neural cache (fairseq-eval-lm --cache-window), or None
        self.cache_pointer = None

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """The decoder's (log-)softmax; in evaluation with the task's cache
        pointer, mixed with the cache over this stream's recent words."""
        if self.cache_pointer is None or self.training:
            return super().get_normalized_probs(net_output, log_probs, sample)
        # every word's probability (an adaptive softmax given the sample computes the targets' only)
        probs = super().get_normalized_probs(net_output, log_probs=True, sample=None)
        if sample is None or "target" not in sample or sample["target"].shape != probs.shape[:2]:
            raise UsageError("the cache pointer scores whole windows with their targets: use fairseq-eval-lm without --softmax-batch")
        if sample["net_input"].get("reset"):
            self.cache_pointer.reset()
        hidden = net_output[1]["raw_last"].transpose(0, 1)
        probs = self.cache_pointer(probs, hidden, sample["target"])
        return probs if log_probs else probs.exp()

    @classmethod
    def build_model(cls, cfg, task):
        if not isinstance(task, AlternatingLMTask):
            raise UsageError(
                f"qrnn_lm needs --task alternating_lm (it carries its state across contiguous windows), "
                f"not {getattr(task.cfg, '_name', type(task).__name__)}"
            )
        return cls(QRNNDecoder(cfg, task.target_dictionary))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        embed = state_dict.get("decoder.embed_tokens.weight")
        mine = self.decoder.embed_tokens.weight
        if embed is not None and embed.shape != mine.shape:
            raise UsageError(
                f"the checkpoint's model has {embed.shape[0]} dictionary entries x {embed.shape[1]} dims, "
                f"this one {mine.shape[0]} x {mine.shape[1]}: use the data directory (dict.txt) and --arch "
                f"the checkpoint was trained with"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def get_extra_state(self) -> dict:
        return self.extra_state_hooks[0]() if self.extra_state_hooks else {}

    def set_extra_state(self, state: dict) -> None:
        if self.extra_state_hooks and state:
            self.extra_state_hooks[1](state)


def _set_defaults(args, **defaults):
    for name, value in defaults.items():
        setattr(args, name, safe_getattr(args, name, value))


@register_model_architecture("qrnn_lm", "qrnn_lm_ptb")
def qrnn_lm_ptb(args):
    """The seed's Penn Treebank model: 4 x 1550, emsize 400."""
    _set_defaults(args, embed_dim=400, hidden_dim=1550, num_layers=4, dropout_hidden=0.3)


@register_model_architecture("qrnn_lm", "qrnn_lm_wt2")
def qrnn_lm_wt2(args):
    """The seed's WikiText-2 model: as PTB with --dropouth 0.2."""
    _set_defaults(args, dropout_hidden=0.2)
    qrnn_lm_ptb(args)
