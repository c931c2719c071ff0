"""``qrnn_lm``: the AWD-style QRNN (or LSTM/GRU) language model with carried state."""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqLanguageModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr

from ..errors import UsageError
from ..modules import CELLS
from .qrnn_decoder import QRNNDecoder

# the least log-probability generation sees (natural log): fairseq forces prompt
# tokens and the final </s> by keeping their log-probability, which must be finite
LOG_PROB_FLOOR = -1e9


@dataclass
class QRNNLanguageModelConfig(FairseqDataclass):
    rnn_type: ChoiceEnum(CELLS) = field(
        default="qrnn",
        metadata={
            "help": "recurrent core (alternate_sg's --model QRNN|LSTM|GRU); weight drop acts on the QRNN linear weights or the LSTM/GRU hidden-to-hidden weights"
        },
    )
    embed_dim: int = field(
        default=256,
        metadata={
            "help": "embedding size (alternate_sg's --emsize); the last layer has this size, as input and output embeddings are tied"
        },
    )
    hidden_dim: int = field(
        default=256, metadata={"help": "hidden size of every recurrent layer but the last (--nhid)"}
    )
    num_layers: int = field(default=2, metadata={"help": "number of recurrent layers (--nlayers)"})
    dropout: float = field(default=0.4, metadata={"help": "locked dropout on the last layer's output (--dropout)"})
    dropout_hidden: float = field(
        default=0.3, metadata={"help": "locked dropout between recurrent layers (--dropouth)"}
    )
    dropout_input: float = field(default=0.4, metadata={"help": "locked dropout on the embedded input (--dropouti)"})
    dropout_embed: float = field(
        default=0.1, metadata={"help": "embedding dropout: drops whole word rows of the table (--dropoute)"}
    )
    weight_drop: float = field(default=0.1, metadata={"help": "DropConnect on the recurrent weights (--wdrop)"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout on the QRNN forget gates (QRNN only)"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None,
        metadata={
            "help": "adaptive softmax cutoffs, e.g. 2800,20000,76000 (untied output embedding); 'auto'/unset: the original code's above 75,000 types, else full; 'none': full"
        },
    )
    adaptive_softmax_dropout: float = field(
        default=0.0, metadata={"help": "dropout in the adaptive softmax's tail projections"}
    )
    adaptive_softmax_factor: float = field(
        default=4.0,
        metadata={
            "help": "each adaptive softmax tail cluster's projection is this factor smaller than the previous one"
        },
    )


@register_model("qrnn_lm", dataclass=QRNNLanguageModelConfig)
class QRNNLanguageModel(FairseqLanguageModel):
    """AWD-style QRNN language model (Merity et al.) with tied embeddings;
    ``--rnn-type lstm|gru`` gives the AWD-LSTM/GRU with the same dropouts.

    Architectures: ``qrnn_lm`` (the config defaults: 2 x 256, fast on a CPU),
    ``qrnn_lm_ptb`` and ``qrnn_lm_wt2`` (the published 4 x 1550, emsize 400).

    Args:
        decoder: its ``QRNNDecoder``.

    Inputs / Outputs: as ``QRNNDecoder`` (src_tokens (B, T) -> logits
    (B, T, V) and extra).
    """

    def __init__(self, decoder):
        super().__init__(decoder)
        # the task's TrainingState (carried rows, the synthesizer, the run's flags),
        # kept in the model's checkpoint entry; None outside alternating_lm's training
        self.run_state = None
        # the task's neural cache (fairseq-eval-lm --cache-window), or None
        self.cache_pointer = None

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """The decoder's (log-)softmax; in evaluation with the task's cache
        pointer, mixed with the cache over this stream's recent words.

        In evaluation no log-probability is below LOG_PROB_FLOOR, so that
        fairseq's generator can always force a token (a prompt's, the final
        </s>) whose probability underflowed at a low temperature."""
        if self.cache_pointer is None or self.training:
            probs = super().get_normalized_probs(net_output, log_probs, sample)
            return probs.clamp_min(LOG_PROB_FLOOR) if log_probs and not self.training else probs
        # every word's probability (an adaptive softmax given the sample computes the targets' only)
        probs = super().get_normalized_probs(net_output, log_probs=True, sample=None)
        if sample is None or "target" not in sample or sample["target"].shape != probs.shape[:2]:
            raise UsageError(
                "the cache pointer scores whole windows with their targets: use fairseq-eval-lm without --softmax-batch"
            )
        if sample["net_input"].get("reset"):
            self.cache_pointer.reset()
        hidden = net_output[1]["raw_last"].transpose(0, 1)
        probs = self.cache_pointer(probs, hidden, sample["target"])
        return probs if log_probs else probs.exp()

    @classmethod
    def build_model(cls, cfg, task):
        # a capability of the task, not its class: it must serve contiguous
        # windows of named streams (net_input "stream" and "reset")
        if not getattr(task, "contiguous_streams", False):
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
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        differ = [k for k, v in state_dict.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
        missing = sorted(set(own) - set(state_dict))
        if strict and (differ or missing):
            what = (
                f"{differ[0]} is {tuple(state_dict[differ[0]].shape)} there, {tuple(own[differ[0]].shape)} here"
                if differ
                else f"it has no {missing[0]}"
            )
            raise UsageError(
                f"the checkpoint's model is not this one ({what}): use the --arch, --rnn-type, "
                f"--embed-dim, --hidden-dim, --num-layers and --adaptive-softmax-cutoff it was trained with"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def get_extra_state(self) -> dict:
        return self.run_state.state_dict() if self.run_state is not None else {}

    def set_extra_state(self, state: dict) -> None:
        if self.run_state is not None and state:
            self.run_state.load_state_dict(state)


def _set_defaults(args, **defaults):
    for name, value in defaults.items():
        setattr(args, name, safe_getattr(args, name, value))


@register_model_architecture("qrnn_lm", "qrnn_lm_ptb")
def qrnn_lm_ptb(args):
    """The published Penn Treebank model: 4 x 1550, emsize 400."""
    _set_defaults(args, embed_dim=400, hidden_dim=1550, num_layers=4, dropout_hidden=0.3)


@register_model_architecture("qrnn_lm", "qrnn_lm_wt2")
def qrnn_lm_wt2(args):
    """The published WikiText-2 model: as PTB with --dropouth 0.2."""
    _set_defaults(args, dropout_hidden=0.2)
    qrnn_lm_ptb(args)
