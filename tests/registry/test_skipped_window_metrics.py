"""A worker whose window was skipped (its gradient at the start state not finite)
sends zeros: the figures the criterion derives from the summed logs are those of
the other workers' windows alone."""

import math

import pytest
import torch

from helpers import build_from_flags, logged

from altsg_fairseq.dni import BackwardInterface, Synthesizer

V, B, SIZES = 30, 3, [2, 3]
FIGURES = ["sg_loss", "sg_cos", "sg_cos_l0", "sg_cos_l1", "sg_norm_ratio", "sg_rel_error", "sg_inject_ratio"]


def two_windows(W):
    """The second of two synthetic windows (so it pairs an injection) of loss sum(W * start), as logged."""
    torch.manual_seed(0)
    interface = BackwardInterface(Synthesizer("gru", hidden=3, noise_std=0.0).double(), layer_sizes=SIZES)
    interface.synthetic = True
    for _ in range(2):
        start, probe = interface.wrap_start(torch.randn(B, sum(SIZES), dtype=torch.float64), tokens=10)
        end = torch.randn(B, sum(SIZES), dtype=torch.float64, requires_grad=True)
        ((start * W).sum() + probe + interface.inject(end, 10)).backward()
        stats = interface.pop_stats()
    return dict(stats, loss=5.0, nll_loss=5.0, ar=0.0, tar=0.0, ntokens=10, nsentences=B, sample_size=10)


def test_a_skipped_worker_adds_nothing_but_the_count(tmp_path):
    criterion = build_from_flags(tmp_path, "--embed-dim", "4", "--hidden-dim", "4", "--use-sg", num_types=V).criterion
    W = torch.randn(B, sum(SIZES), dtype=torch.float64)
    finite, broken = two_windows(W), two_windows(torch.full_like(W, math.nan))
    assert broken["sg_skipped"] == 1 and list(broken) == list(finite)
    alone, together = logged(criterion, [finite]), logged(criterion, [finite, broken])
    for name in FIGURES:
        assert math.isfinite(alone[name]), name
        # sg_loss is a mean over the elements of all windows, the skipped one's included
        expected = alone[name] / 2 if name == "sg_loss" else alone[name]
        assert together[name] == pytest.approx(expected, rel=1e-12), name
    assert together["sg_skipped"] == 1 and alone["sg_skipped"] == 0
