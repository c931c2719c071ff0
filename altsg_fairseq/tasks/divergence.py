"""A training run that diverges stops with one line, before it saves another checkpoint."""

import math

from ..errors import UsageError


def stop_if_diverged(logging_output: dict, update: int, dictionary_size: int) -> None:
    """Stop at a training loss that is not finite or is more than twice a uniform model's
    (a perplexity above the dictionary size squared: no run that learns gets there).

    logging_output: the criterion's, with the summed loss in nats ("nll_loss",
    else "loss") and "ntokens"; update: the update's number, for the message.
    """
    summed = logging_output.get("nll_loss", logging_output.get("loss", 0.0))
    nats = float(summed) / max(float(logging_output.get("ntokens", 1)), 1.0)
    uniform = math.log(dictionary_size)
    if math.isfinite(nats) and math.isfinite(float(logging_output.get("loss", 0.0))) and nats <= 2 * uniform:
        return
    bits = nats / math.log(2)  # fairseq logs base 2: say it in bits
    what = f"{bits:,.1f} bits per token, over twice a uniform model's {uniform / math.log(2):.1f}" \
        if math.isfinite(bits) else f"{bits}"
    raise UsageError(f"training diverged at update {update}: the loss is {what}; the run stops here "
                     f"(checkpoints saved before stay as they were): lower --lr or set --clip-norm")
