"""A training run that diverges stops with one line, before it saves another checkpoint."""

import math
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from .. import distributed
from ..errors import AgreedStop

READ = ("nll_loss", "loss", "ntokens")  # what stop_if_diverged reads of a logging output


def loss_values(logging_output: dict) -> Dict[str, Tensor]:
    """The values ``stop_if_diverged`` reads that are device tensors, to be read
    on the host in one transfer (with ``read_on_host``, or with the synthesizer's
    verdicts: ``BackwardInterface.settle``) instead of one each."""
    return {k: logging_output[k] for k in READ if torch.is_tensor(logging_output.get(k))}


def read_on_host(values: Sequence[Tensor]) -> List[float]:
    """0-dim tensors of one device -> Python floats, in one transfer (none for no values)."""
    if not values:
        return []
    return torch.stack([v.detach().to(torch.float64) for v in values]).tolist()


def summed_over_workers(logging_output: dict, counted: bool) -> dict:
    """What ``stop_if_diverged`` reads, summed over the data-parallel workers (a collective: every
    worker calls it at every step, ``counted`` False for a step whose loss does not count), so that
    every worker takes the same decision, the one a single worker holding all rows would take."""
    summed = logging_output.get("nll_loss", logging_output.get("loss", 0.0))
    values = [float(summed), float(logging_output.get("loss", 0.0)), float(logging_output.get("ntokens", 0))]
    sums = torch.tensor(values if counted else [0.0, 0.0, 0.0], dtype=torch.float64)
    distributed.all_reduce_sum(sums)
    nll_loss, loss, ntokens = sums.tolist()
    return {"nll_loss": nll_loss, "loss": loss, "ntokens": ntokens}


def stop_if_diverged(logging_output: dict, update: int, dictionary_size: int) -> None:
    """Stop at a training loss that is not finite or is more than twice a uniform model's
    (a perplexity above the dictionary size squared: no run that learns gets there).

    logging_output: the criterion's, with the summed loss in nats ("nll_loss",
    else "loss") and "ntokens" (numbers or tensors: ``loss_values`` names the
    tensors to read first); update: the update's number, for the message.
    """
    summed = logging_output.get("nll_loss", logging_output.get("loss", 0.0))
    nats = float(summed) / max(float(logging_output.get("ntokens", 1)), 1.0)
    uniform = math.log(dictionary_size)
    if math.isfinite(nats) and math.isfinite(float(logging_output.get("loss", 0.0))) and nats <= 2 * uniform:
        return
    bits = nats / math.log(2)  # fairseq logs base 2: say it in bits
    what = (
        f"{bits:,.1f} bits per token, over twice a uniform model's {uniform / math.log(2):.1f}"
        if math.isfinite(bits)
        else f"{bits}"
    )
    # every worker decides on the same (summed) losses at the same update
    raise AgreedStop(
        f"training diverged at update {update}: the loss is {what}; the run stops here "
        f"(checkpoints saved before stay as they were): lower --lr or set --clip-norm"
    )
