"""The plugin leaves the process's global settings as it found them: PyTorch's
thread count (the compiled forget-mult once raised it to the core count) and
denormal flushing."""

import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = """
import os, sys, torch
if sys.argv[2] == "api":
    torch.set_num_threads(int(sys.argv[1]))
from altsg_fairseq.dni import BackwardInterface, Synthesizer
from altsg_fairseq.modules.denormals import flushing_denormals
from altsg_fairseq.modules import RecurrentStack, forget_mult
threads = torch.get_num_threads()
assert threads == int(sys.argv[1]), threads
for cell in ("qrnn", "lstm", "gru"):
    stack = RecurrentStack(cell, 8, 16, 8, 2, dropout_hidden=0.1, weight_drop=0.1)
    out, state = stack(torch.randn(30, 4, 8))
    for core in ("qrnn", "gru", "lstm"):
        dni = BackwardInterface(Synthesizer(core, hidden=4))
        dni.synthetic = True
        start, probe = dni.wrap_start(stack.pack(state).detach(), tokens=120)
        out, end = stack(torch.randn(30, 4, 8), stack.unpack(start, state))
        (out.pow(2).sum() + probe + dni.inject(stack.pack(end), 120)).backward()
        dni.step()
f = torch.rand(20, 4, 600, requires_grad=True)
forget_mult(f, torch.rand(20, 4, 600), backend="cpu").sum().backward()
assert torch.get_num_threads() == threads, (torch.get_num_threads(), threads)
assert not flushing_denormals()
print("ok", threads)
"""


@pytest.mark.parametrize(
    "threads,how",
    [pytest.param(1, "env", marks=pytest.mark.slow), pytest.param(1, "api", marks=pytest.mark.slow), (2, "env")],
)
def test_forward_and_backward_keep_the_thread_count(threads, how):
    """OMP_NUM_THREADS=N (or torch.set_num_threads(N)) stays N after every core
    type and synthesizer, forward and backward, has run."""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads) if how == "env" else "2"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), how], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", str(threads)]
