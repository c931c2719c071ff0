"""The warm_restarts lr scheduler through fairseq's registries (docs/method.md#schedules)."""

import pytest
import torch
from fairseq.optim import build_optimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler

from helpers import build_from_flags


def build_schedule(tmp_path, *flags):
    cfg = build_from_flags(
        tmp_path,
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--lr-scheduler",
        "warm_restarts",
        *flags,
        "--embed-dim",
        "4",
        "--hidden-dim",
        "4",
        num_types=5,
    ).cfg
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    return build_lr_scheduler(cfg.lr_scheduler, optimizer), optimizer


def test_lr_scheduler_is_epoch_exact(tmp_path):
    scheduler, optimizer = build_schedule(tmp_path, "--restart-lr", "--restart-base", "5", "--use-sg", "--mixture")
    lrs = [scheduler.step_begin_epoch(e) for e in range(1, 12)]
    assert [round(lr / 1e-3, 3) for lr in lrs] == [1.0, 0.905, 0.655, 0.345, 0.095] * 2 + [1.0]


def test_lr_scheduler_when_and_autodecay(tmp_path):
    scheduler, _ = build_schedule(tmp_path, "--when", "2", "4", "--decay-ratio", "0.5", "--autodecay", "2")
    assert [scheduler.step_begin_epoch(e) for e in (1, 2, 3, 5)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    for epoch, val in enumerate([3.0, 2.0, 2.5, 2.1], start=1):  # two epochs without improvement
        scheduler.step(epoch, val)
    assert scheduler.step_begin_epoch(5) == pytest.approx(1.25e-4)
    assert scheduler.state_dict()["halvings"] == 1


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--restart-base", "5", "3"], "--restart-base must be strictly increasing"),
        (["--restart-base", "0"], "--restart-base epochs must be 1 or more"),
        (["--use-sg", "--whenswitch", "0"], "--whenswitch epochs must be 1 or more"),
        (["--mixture"], "--mixture toggles synthetic gradients at warm restarts"),
        (["--whenswitch", "2"], "synthesizer options, they need --use-sg"),
        (["--restart-lr"], "--restart-lr needs --restart-base"),
        (["--when", "0"], "--when epochs must be 1 or more"),
    ],
)
def test_schedule_flags_are_checked(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        build_schedule(tmp_path, *flags)
