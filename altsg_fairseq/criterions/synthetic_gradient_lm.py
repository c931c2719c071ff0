"""``synthetic_gradient_lm``: the AWD loss, with synthetic gradients at the carried state."""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from .. import distributed
from ..modules.cross_entropy import summed_cross_entropy


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 for losses; other dtypes unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@dataclass
class SyntheticGradientLMConfig(FairseqDataclass):
    alpha: float = field(
        default=2.0,
        metadata={
            "help": "activation regularisation (AR): alpha * mean(square(dropped last-layer output)); training only"
        },
    )
    beta: float = field(
        default=1.0,
        metadata={
            "help": "temporal activation regularisation (TAR): beta * mean(square(h_t - h_{t-1})) on the raw last-layer output; training only"
        },
    )


@register_criterion("synthetic_gradient_lm", dataclass=SyntheticGradientLMConfig)
class SyntheticGradientLMCriterion(FairseqCriterion):
    """The AWD language-model loss, and the meeting of synthetic and real gradients.

    The returned loss is summed over target tokens, as fairseq expects:
    sum of cross-entropies + ntokens * (AR + TAR), so that divided by the
    sample size it is the per-batch mean loss of the original code
    (docs/method.md#the-awd-qrnn-language-model).

    With the task's synthetic-gradient method (``--use-sg``: ``task.dni``,
    the only thing read of the task), in training: the decoder's flat start
    state is routed through the method so that the true gradient arriving
    there trains the synthesizer, and a zero-valued term injects the
    synthetic gradient at the flat end state in synthetic phases. Both
    happen inside fairseq's one backward pass; the logged loss and
    perplexity stay the real ones.

    Args:
        task: the task (its ``dni`` is read, when it has one).
        alpha, beta: the AR and TAR weights (the original code's 2 and 1).

    Inputs:
        model: a ``qrnn_lm``; sample: a batch of the task's windows
            (net_input src_tokens (B, T), stream, reset; target (B, T)).

    Outputs:
        (loss: the summed loss, a 0-dim tensor in nats; sample_size: the
        target tokens B * T; logging_output: summed nats of the loss and
        the cross-entropy, AR, TAR, counts).
    """

    def __init__(self, task, alpha: float, beta: float):
        super().__init__(task)
        self.alpha = alpha
        self.beta = beta

    def forward(self, model, sample, reduce=True):
        net_input, ntokens = sample["net_input"], sample["ntokens"]
        dni = getattr(self.task, "dni", None) if model.training else None
        if dni is None:
            logits, extra = model(**net_input)
        else:
            # fairseq divides the summed loss's gradient by the tokens of all
            # data-parallel workers: the per-token units of the synthetic side
            tokens = ntokens * distributed.world_size()
            start = model.decoder.start_state(net_input["stream"], net_input["reset"], net_input["src_tokens"].size(0))
            start, probe = dni.wrap_start(start, tokens, restart=net_input["reset"])
            logits, extra = model(**net_input, state=start)
        nll = self.cross_entropy(model, logits, sample["target"])
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
        if dni is not None:
            loss = loss + probe
            if dni.synthetic:
                loss = loss + dni.inject(model.decoder.flatten_state(extra["final_state"]), tokens)
        return loss, ntokens, logging_output

    @staticmethod
    def cross_entropy(model, output, target):
        """Summed cross-entropy of the decoder's output (B, T, V) logits, or
        (B, T, E) features with an adaptive softmax, against target (B, T)."""
        adaptive = getattr(model.decoder, "adaptive_softmax", None)
        if adaptive is None:  # in float32 block by block, without a float32 copy of bfloat16 logits
            return summed_cross_entropy(output.reshape(-1, output.size(-1)), target.reshape(-1))
        nll = output.new_zeros((), dtype=torch.float32)
        for logits, cluster_target in zip(*adaptive(output, target.contiguous())):
            if cluster_target is not None:  # the head, and the tail clusters this batch reaches
                nll = nll + F.cross_entropy(upcast(logits), cluster_target, reduction="sum")
        return nll

    def activation_penalties(self, extra):
        """AR and TAR (docs/method.md#the-awd-qrnn-language-model), as 0-dim tensors."""
        dropped, raw = (upcast(extra[k]) for k in ("dropped_last", "raw_last"))
        ar = self.alpha * dropped.pow(2).mean()
        if raw.size(0) > 1:
            tar = self.beta * (raw[1:] - raw[:-1]).pow(2).mean()
        else:
            tar = ar.new_zeros(())
        return ar, tar

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        ntokens = total("ntokens")
        sample_size = total("sample_size")
        # summed nats -> per-token bits: fairseq logs base-2 losses and ppl = 2 ** loss
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        metrics.log_scalar("ar", total("ar") / ntokens, ntokens, round=4)
        metrics.log_scalar("tar", total("tar") / ntokens, ntokens, round=4)
        metrics.log_derived(
            "ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg)
        )  # inf, not an error, when it overflows
        steps = total("sg_steps")
        if steps > 0:
            metrics.log_scalar("sg_loss", total("sg_loss") / total("sg_elements"), steps)
            metrics.log_scalar("sg_on", total("sg_on") / steps, steps, round=2)
            metrics.log_scalar("sg_skipped", total("sg_skipped"), 0, round=0)
            SyntheticGradientLMCriterion.reduce_gradient_diagnostics(logging_outputs, total)

    @staticmethod
    def reduce_gradient_diagnostics(logging_outputs, total) -> None:
        """Cosine, norm ratio and relative error of the synthetic gradient at the start
        state, overall and per layer, and the injected / true gradient ratio, as ratios
        of sums over the logged windows and workers (BackwardInterface.pop_stats)."""
        sums = sorted(
            {k for log in logging_outputs for k in log if k.startswith(("sg_dot", "sg_hat_sq", "sg_true_sq"))}
            | {"sg_loss", "sg_injected_sq", "sg_future_sq"}
        )
        for key in sums:
            metrics.log_scalar_sum("_" + key, total(key))  # hidden: the derived ratios below are logged

        def ratio(num, den, cos_den=None):
            """sqrt(num / den), or num / sqrt(den * cos_den) for a cosine, from the summed meters."""

            def derive(meters):
                a = meters["_" + num].sum
                b = meters["_" + den].sum * (meters["_" + cos_den].sum if cos_den else 1.0)
                if b <= 0:
                    return float("nan")
                return a / math.sqrt(b) if cos_den else math.sqrt(a / b)

            return derive

        suffixes = sorted({k[len("sg_dot") :] for k in sums if k.startswith("sg_dot")})  # "", "_l0", ...
        for suffix in suffixes:
            if total(f"sg_true_sq{suffix}") > 0:
                metrics.log_derived(
                    f"sg_cos{suffix}", ratio(f"sg_dot{suffix}", f"sg_hat_sq{suffix}", cos_den=f"sg_true_sq{suffix}")
                )
        if total("sg_true_sq") > 0:  # some window's backward pass ran and was not skipped
            metrics.log_derived("sg_norm_ratio", ratio("sg_hat_sq", "sg_true_sq"))
            metrics.log_derived("sg_rel_error", ratio("sg_loss", "sg_true_sq"))
        if total("sg_future_sq") > 0:  # some window followed an injection
            metrics.log_derived("sg_inject_ratio", ratio("sg_injected_sq", "sg_future_sq"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
