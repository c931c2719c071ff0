"""``qrnn_lm``: the AWD-style QRNN language model with carried state."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import (
    FairseqDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from ..errors import UsageError
from ..modules import QRNNLayer, QRNNState, embedding_dropout, locked_dropout
from ..tasks.alternating_lm import AlternatingLMTask


@dataclass
class QRNNLanguageModelConfig(FairseqDataclass):
    embed_dim: int = field(default=256, metadata={"help": "embedding size (the seed's --emsize); the last QRNN layer has this size, as input and output embeddings are tied"})
    hidden_dim: int = field(default=256, metadata={"help": "hidden size of every QRNN layer but the last (--nhid)"})
    num_layers: int = field(default=2, metadata={"help": "number of QRNN layers (--nlayers)"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last layer's output (--dropout)"})
    dropout_hidden: float = field(default=0.3, metadata={"help": "locked dropout between QRNN layers (--dropouth)"})
    dropout_input: float = field(default=0.4, metadata={"help": "locked dropout on the embedded input (--dropouti)"})
    dropout_embed: float = field(default=0.1, metadata={"help": "embedding dropout: drops whole word rows of the table (--dropoute)"})
    weight_drop: float = field(default=0.1, metadata={"help": "DropConnect on the QRNN linear weights (--wdrop)"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout on the QRNN forget gates"})


class QRNNDecoder(FairseqDecoder):
    """Embedding -> QRNN layers -> tied output projection.

    The recurrent state of every stream (a split being trained on or scored)
    is carried from one window to the next inside the decoder, so that
    fairseq's scorers, which call the model once per batch, see contiguous
    text with carried state. Calls without a stream start from zeros and
    carry nothing.
    """

    def __init__(self, cfg: QRNNLanguageModelConfig, dictionary):
        super().__init__(dictionary)
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(len(dictionary), cfg.embed_dim)
        sizes = [cfg.hidden_dim] * (cfg.num_layers - 1) + [cfg.embed_dim]
        inputs = [cfg.embed_dim] + sizes[:-1]
        self.layers = nn.ModuleList(
            QRNNLayer(i, h, window=2 if n == 0 else 1, zoneout=cfg.zoneout, weight_dropout=cfg.weight_drop)
            for n, (i, h) in enumerate(zip(inputs, sizes))
        )
        self.output_bias = nn.Parameter(torch.zeros(len(dictionary)))
        self.carried: Dict[str, List[QRNNState]] = {}
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)

    @property
    def state_sizes(self) -> List[int]:
        """Size of each layer's carried cell state."""
        return [layer.hidden_size for layer in self.layers]

    def carried_state(self, stream: str, reset: bool) -> Optional[List[QRNNState]]:
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
        state: Optional[List[QRNNState]] = None,
        **unused,
    ):
        """src_tokens: (B, T).

        ``stream`` names the carried state to continue (None: start from
        zeros, carry nothing) and ``reset`` starts it afresh. ``state`` (one
        QRNNState per layer) overrides the carried state, e.g. to attach
        synthetic gradients to it. The final state is carried (detached) for
        the next window of the same stream.

        Returns (logits (B, T, V), extra) where extra holds "initial_state"
        and "final_state" (per-layer QRNNStates, with graph), "raw_last"
        (T, B, E: the last layer's output) and "dropped_last" (the same after
        the output dropout).
        """
        if state is None and stream is not None:
            state = self.carried_state(stream, reset)
        x = embedding_dropout(self.embed_tokens, src_tokens.t(), self.cfg.dropout_embed, self.training)
        x = locked_dropout(x, self.cfg.dropout_input, self.training)
        final_state = []
        for n, layer in enumerate(self.layers):
            x, layer_state = layer(x, None if state is None else state[n])
            final_state.append(layer_state)
            if n < len(self.layers) - 1:
                x = locked_dropout(x, self.cfg.dropout_hidden, self.training)
        dropped = locked_dropout(x, self.cfg.dropout, self.training)
        if stream is not None:
            self.carried[stream] = [s.detach() for s in final_state]
        logits = self.output_layer(dropped.transpose(0, 1))
        extra = {"initial_state": state, "final_state": final_state, "raw_last": x, "dropped_last": dropped}
        return logits, extra

    def output_layer(self, features: Tensor) -> Tensor:
        """features: (B, T, E) -> logits (B, T, V), tied to the embedding."""
        return nn.functional.linear(features, self.embed_tokens.weight, self.output_bias)

    def max_positions(self):
        return int(1e9)


@register_model("qrnn_lm", dataclass=QRNNLanguageModelConfig)
class QRNNLanguageModel(FairseqLanguageModel):
    """AWD-style QRNN language model (Merity et al.) with tied embeddings.

    Architectures: ``qrnn_lm`` (the config defaults: 2 x 256, fast on a CPU),
    ``qrnn_lm_ptb`` and ``qrnn_lm_wt2`` (the seed's 4 x 1550, emsize 400).
    """

    def __init__(self, decoder):
        super().__init__(decoder)
        # (get, set) callables of the task: training state kept in the
        # model's checkpoint entry, e.g. the synthesizer and its optimizer
        self.extra_state_hooks = None

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
