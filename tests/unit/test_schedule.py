"""Schedules (docs/method.md#schedules), against its worked example."""

import math

import pytest

from altsg_fairseq.schedule import check_epochs, cosine_factor, restart_points, synthetic_on


def phases(epochs, whenswitch=(), mixture=False, bases=()):
    return "".join("S" if synthetic_on(e, whenswitch, mixture, bases) else "r" for e in range(1, epochs + 1))


def test_worked_example_restart_base_5_with_mixture():
    # epochs 1-5 real, 6-10 synthetic, 11-20 real, 21-40 synthetic, 41-80 real, 81-160 synthetic
    assert phases(160, mixture=True, bases=[5]) == "r" * 5 + "S" * 5 + "r" * 10 + "S" * 20 + "r" * 40 + "S" * 80
    assert restart_points([5], 320) == [5, 10, 20, 40, 80, 160, 320]  # cycles 5, 5, 10, 20, 40, 80, 160
    first_cycle = [round(cosine_factor(e, [5]), 3) for e in range(1, 6)]
    assert first_cycle == [1.0, 0.905, 0.655, 0.345, 0.095]
    assert cosine_factor(6, [5]) == 1.0 and cosine_factor(11, [5]) == 1.0 and cosine_factor(21, [5]) == 1.0
    assert round(cosine_factor(12, [5]), 4) == round(0.5 * (1 + math.cos(math.pi / 10)), 4)


def test_restarts_160_320():
    assert restart_points([160, 320], 320) == [160, 320]
    assert cosine_factor(1, [160, 320]) == 1.0 and cosine_factor(161, [160, 320]) == 1.0
    assert cosine_factor(160, [160, 320]) == pytest.approx(0.5 * (1 + math.cos(math.pi * 159 / 160)))
    # the PTB alternating runs: real until the first restart, then synthetic
    assert phases(320, mixture=True, bases=[160, 320]) == "r" * 160 + "S" * 160


def test_whenswitch_2_with_and_without_mixture():
    assert phases(10, whenswitch=[2]) == "r" + "S" * 9  # DNI runs: synthetic from epoch 2 on
    # the WikiText-2 alternating runs: --whenswitch 2 and --mixture with restarts after 5, 10, 20
    assert phases(25, whenswitch=[2], mixture=True, bases=[5]) == "r" + "S" * 4 + "r" * 5 + "S" * 10 + "r" * 5
    assert phases(200, whenswitch=[2], mixture=True, bases=[160, 320]) == "r" + "S" * 159 + "r" * 40


def test_epoch_lists_are_checked():
    check_epochs("--when", [1, 3])
    with pytest.raises(ValueError, match="--when epochs must be 1 or more, got 0 2"):
        check_epochs("--when", [0, 2])
    with pytest.raises(ValueError, match="must be strictly increasing, got 5 5"):
        check_epochs("--restart-base", [5, 5], increasing=True)
