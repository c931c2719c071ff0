"""Denormal floats flushed to zero for a scope, then the caller's setting restored.

A synthetic gradient injected at the end state decays through (1 - f)
products into denormal floats, which slow CPU matrix products about 3x
(measured: benchmarks/bench_step.py); the task flushes them during the
training step and the optimizer steps of a ``--use-sg`` run. PyTorch offers a
switch (``torch.set_flush_denormal``) but no way to read it, so the current
setting is read by a probe: with flushing on, a product whose exact value is
denormal comes out as 0. The switch acts on the calling thread's
floating-point unit (threads started later copy it).
"""

from contextlib import contextmanager

import torch


def flushing_denormals() -> bool:
    """Whether denormal float32 results are flushed to zero on this thread now."""
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0


@contextmanager
def denormals_flushed(enabled: bool = True):
    """Flush denormals to zero inside the block (CPU; a no-op where unsupported); restore on exit."""
    if not enabled:
        yield
        return
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
