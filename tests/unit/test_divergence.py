"""stop_if_diverged (tasks/divergence.py): a finite loss up to twice a uniform model's passes; above
it, or not finite, is one line raised as an AgreedStop, since every worker decides on the same summed
losses at the same update (and so the workers close their connections together before exiting)."""

import math

import pytest

from altsg_fairseq.errors import AgreedStop, UsageError
from altsg_fairseq.tasks.divergence import stop_if_diverged

V = 100  # a uniform model's loss: ln 100 nats, 6.6 bits per token


def test_up_to_twice_a_uniform_model_passes_above_it_stops_every_worker():
    stop_if_diverged({"nll_loss": 2 * math.log(V) * 10, "ntokens": 10}, 1, V)
    with pytest.raises(AgreedStop, match=r"diverged at update 3: the loss is 13\.4 bits per token") as stop:
        stop_if_diverged({"nll_loss": 2.02 * math.log(V) * 10, "ntokens": 10}, 3, V)
    assert isinstance(stop.value, UsageError) and stop.value.code.startswith("altsg_fairseq: error: ")
    with pytest.raises(AgreedStop, match="the loss is nan"):
        stop_if_diverged({"nll_loss": float("nan"), "ntokens": 10}, 4, V)
