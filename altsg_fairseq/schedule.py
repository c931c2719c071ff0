"""Epoch schedules of the original code (docs/method.md#schedules): warm restarts and phases.

Epochs are 1-based. ``bases`` is ``--restart-base``: one value B restarts
after epochs B, 2B, 4B, ... (cycles of B, B, 2B, 4B, ...); several values are
the epochs after which to restart (beyond the last, cycles keep the last
cycle's length).
"""

import math
from typing import List, Sequence, Tuple


def check_epochs(name: str, epochs: Sequence[int], increasing: bool = False) -> None:
    """Raise ValueError unless every epoch is >= 1 (and strictly increasing)."""
    if any(e < 1 for e in epochs):
        raise ValueError(f"{name} epochs must be 1 or more, got {' '.join(map(str, epochs))}")
    if increasing and any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {' '.join(map(str, epochs))}")


def restart_points(bases: Sequence[int], up_to: int) -> List[int]:
    """Epochs after which the learning rate restarts, through ``up_to``."""
    points = list(bases[:1]) if len(bases) == 1 else list(bases)
    while points and points[-1] < up_to:
        step = points[-1] if len(bases) == 1 else points[-1] - (points[-2] if len(points) > 1 else 0)
        points.append(points[-1] + step)
    return points


def cycle(epoch: int, bases: Sequence[int]) -> Tuple[int, int]:
    """(first epoch, length) of the restart cycle holding ``epoch``."""
    start = 1
    for point in restart_points(bases, epoch):
        if epoch <= point:
            return start, point - start + 1
        start = point + 1
    raise AssertionError("restart_points covers every epoch")


def cosine_factor(epoch: int, bases: Sequence[int]) -> float:
    """lr / base lr: a cosine from 1 towards 0 over each cycle, set once per epoch."""
    start, length = cycle(epoch, bases)
    return 0.5 * (1 + math.cos(math.pi * (epoch - start) / length))


def synthetic_on(epoch: int, whenswitch: Sequence[int], mixture: bool, bases: Sequence[int]) -> bool:
    """Whether synthetic gradients are injected in ``epoch``.

    Off at first; toggled at the start of every ``whenswitch`` epoch and, with
    ``mixture``, at every warm restart.
    """
    toggles = sum(1 for e in whenswitch if e <= epoch)
    if mixture:
        toggles += sum(1 for r in restart_points(bases, epoch) if r < epoch)
    return toggles % 2 == 1
