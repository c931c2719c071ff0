"""``synthetic_gradient_lm``: cross-entropy + AR + TAR for stateful LMs."""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class SyntheticGradientLMConfig(FairseqDataclass):
    alpha: float = field(default=2.0, metadata={"help": "activation regularisation (AR): alpha * mean(square(dropped last-layer output)); training only"})
    beta: float = field(default=1.0, metadata={"help": "temporal activation regularisation (TAR): beta * mean(square(h_t - h_{t-1})) on the raw last-layer output; training only"})


@register_criterion("synthetic_gradient_lm", dataclass=SyntheticGradientLMConfig)
class SyntheticGradientLMCriterion(FairseqCriterion):
    """The AWD language-model loss.

    The returned loss is summed over target tokens, as fairseq expects:
    sum of cross-entropies + ntokens * (AR + TAR), so that divided by the
    sample size it is the per-batch mean loss of the reference.
    """

    def __init__(self, task, alpha: float, beta: float):
        super().__init__(task)
        self.alpha = alpha
        self.beta = beta

    def forward(self, model, sample, reduce=True):
        logits, extra = model(**sample["net_input"])
        target = sample["target"]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), reduction="sum")
        ntokens = sample["ntokens"]
        loss = nll
        ar = tar = nll.new_zeros(())
        if model.training:
            ar, tar = self.activation_penalties(extra)
            loss = nll + ntokens * (ar + tar)
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll.data,
            "ar": ar.data * ntokens,
            "tar": tar.data * ntokens,
            "ntokens": ntokens,
            "nsentences": sample["nsentences"],
            "sample_size": ntokens,
        }
        return loss, ntokens, logging_output

    def activation_penalties(self, extra):
        """AR and TAR of reference section 2, as 0-dim tensors."""
        dropped, raw = extra["dropped_last"], extra["raw_last"]
        ar = self.alpha * dropped.float().pow(2).mean()
        if raw.size(0) > 1:
            tar = self.beta * (raw[1:] - raw[:-1]).float().pow(2).mean()
        else:
            tar = ar.new_zeros(())
        return ar, tar

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        ntokens = total("ntokens")
        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        metrics.log_scalar("ar", total("ar") / ntokens, ntokens, round=4)
        metrics.log_scalar("tar", total("tar") / ntokens, ntokens, round=4)
        metrics.log_derived("ppl", lambda meters: 2 ** meters["nll_loss"].avg)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
