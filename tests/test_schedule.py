"""Schedules of reference section 6, against its worked example."""

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import build_optimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler

from altsg_fairseq.modules.schedule import cosine_factor, restart_points, synthetic_on
from conftest import REPO


def phases(epochs, whenswitch=(), mixture=False, bases=()):
    return "".join("S" if synthetic_on(e, whenswitch, mixture, bases) else "r" for e in range(1, epochs + 1))


def test_worked_example_restart_base_5_with_mixture():
    # epochs 1-5 real, 6-10 synthetic, 11-20 real, 21-40 synthetic, 41-80 real, 81-160 synthetic
    assert phases(160, mixture=True, bases=[5]) == "r" * 5 + "S" * 5 + "r" * 10 + "S" * 20 + "r" * 40 + "S" * 80
    assert restart_points([5], 320) == [5, 10, 20, 40, 80, 160, 320]  # cycles 5, 5, 10, 20, 40, 80, 160
    first_cycle = [round(cosine_factor(e, [5]), 3) for e in range(1, 6)]
    assert first_cycle == [1.0, 0.905, 0.655, 0.345, 0.095]
    assert cosine_factor(6, [5]) == 1.0 and cosine_factor(11, [5]) == 1.0 and cosine_factor(21, [5]) == 1.0
    assert round(cosine_factor(12, [5]), 4) == round(0.5 * (1 + __import__("math").cos(__import__("math").pi / 10)), 4)


def test_restarts_160_320():
    assert restart_points([160, 320], 320) == [160, 320]
    assert cosine_factor(1, [160, 320]) == 1.0 and cosine_factor(161, [160, 320]) == 1.0
    assert cosine_factor(160, [160, 320]) == pytest.approx(0.5 * (1 + __import__("math").cos(__import__("math").pi * 159 / 160)))
    # the PTB alternating runs: real until the first restart, then synthetic
    assert phases(320, mixture=True, bases=[160, 320]) == "r" * 160 + "S" * 160


def test_whenswitch_2_with_and_without_mixture():
    assert phases(10, whenswitch=[2]) == "r" + "S" * 9  # DNI runs: synthetic from epoch 2 on
    # the WikiText-2 alternating runs: --whenswitch 2 and --mixture with restarts after 5, 10, 20
    assert phases(25, whenswitch=[2], mixture=True, bases=[5]) == "r" + "S" * 4 + "r" * 5 + "S" * 10 + "r" * 5
    assert phases(200, whenswitch=[2], mixture=True, bases=[160, 320]) == "r" + "S" * 159 + "r" * 40


def build_schedule(tmp_path, *flags):
    (tmp_path / "dict.txt").write_text("a 1\n")
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(tmp_path), "--user-dir", str(REPO / "altsg_fairseq"), "--task", "alternating_lm", "--arch", "qrnn_lm",
        "--optimizer", "adam", "--lr", "0.001", "--lr-scheduler", "warm_restarts", *flags,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    tasks.setup_task(cfg.task)
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


@pytest.mark.parametrize("flags,message", [
    (["--restart-base", "5", "3"], "--restart-base must be strictly increasing"),
    (["--restart-base", "0"], "--restart-base epochs must be 1 or more"),
    (["--use-sg", "--whenswitch", "0"], "--whenswitch epochs must be 1 or more"),
    (["--mixture"], "--mixture toggles synthetic gradients at warm restarts"),
    (["--whenswitch", "2"], "synthesizer options, they need --use-sg"),
    (["--restart-lr"], "--restart-lr needs --restart-base"),
    (["--when", "0"], "--when epochs must be 1 or more"),
])
def test_schedule_flags_are_checked(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        build_schedule(tmp_path, *flags)
