"""How often one training step reads a device value on the host.

On a GPU every such read (``float(t)``, ``.item()``, ``.tolist()``, ``if t``)
waits for all the work queued before it. One --use-sg step reads once at its
end (the losses for the divergence check, with the synthesizer's verdicts in
the same transfer), and in synthetic phases once more where ``inject`` decides
whether the prediction at the end state is finite. Counted here on a CPU, with
the Tensor methods that read wrapped, for reads made by the plugin's own code.
"""

import math

import pytest
import torch
from fairseq.optim import build_optimizer

from helpers import USER_DIR, build_from_flags, window_sample

from altsg_fairseq.errors import UsageError

V, B, T = 40, 3, 9
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
NOT_DEVICE = {"flushing_denormals"}  # probes the CPU's denormal mode with tensors of its own, on the CPU


@pytest.fixture
def host_reads(monkeypatch):
    """A list that collects (file, line) of every read the plugin's code makes while it is active."""
    seen = []
    root = str(USER_DIR)

    def counting(name, original):
        def read(self, *args, **kwargs):
            caller = __import__("sys")._getframe(1)
            if caller.f_code.co_filename.startswith(root) and caller.f_code.co_name not in NOT_DEVICE:
                seen.append((caller.f_code.co_filename[len(root) + 1 :], caller.f_lineno, name))
            return original(self, *args, **kwargs)

        return read

    def start():
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
        return seen

    return start


def build(tmp_path, *flags):
    cfg, task, model, criterion = build_from_flags(
        tmp_path,
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--embed-dim",
        "8",
        "--hidden-dim",
        "8",
        "--use-sg",
        "--sg-hidden",
        "5",
        *flags,
        num_types=V,
    )
    optimizer = build_optimizer(cfg.optimizer, list(model.parameters()))
    task.begin_epoch(1, model)
    return task, model.train(), criterion, optimizer


def step(task, model, criterion, optimizer, tokens, n, ignore_grad=False):
    out = task.train_step(
        window_sample(tokens[:, n * T : (n + 1) * T + 1], n == 0),
        model,
        criterion,
        optimizer,
        n,
        ignore_grad=ignore_grad,
    )
    task.optimizer_step(optimizer, model, n)
    return out[2]


@pytest.mark.parametrize("synthetic,expected", [(False, 1), (True, 2)])
def test_one_read_per_step_and_one_more_to_inject(tmp_path, host_reads, synthetic, expected):
    torch.manual_seed(0)
    task, model, criterion, optimizer = build(tmp_path)
    task.dni.synthetic = synthetic
    tokens = torch.randint(4, V, (B, 3 * T + 1))
    for n in range(2):  # a synthetic window before: the next pairs its injection (the swamping watch)
        step(task, model, criterion, optimizer, tokens, n)
    seen = host_reads()
    log = step(task, model, criterion, optimizer, tokens, 2)
    assert len(seen) == expected, seen
    assert seen[-1][0] == "dni/interface.py" and seen[-1][2] == "tolist"  # settle: the step's one transfer
    assert log["sg_skipped"] == 0 and log["sg_steps"] == 1
    assert float(log["sg_true_sq"]) > 0 and (float(log["sg_future_sq"]) > 0) == synthetic


def test_a_dummy_batch_reads_once_reports_nothing_and_trains_nothing(tmp_path, host_reads):
    """fairseq's ignore_grad zeroes the loss (a worker's dummy batch): the synthesizer's target has no
    loss scale; its window counts no skip, keeps its zeros, and the synthesizer gets zero gradients."""
    torch.manual_seed(1)
    task, model, criterion, optimizer = build(tmp_path)
    tokens = torch.randint(4, V, (B, 2 * T + 1))
    step(task, model, criterion, optimizer, tokens, 0)
    seen = host_reads()
    log = task.train_step(window_sample(tokens[:, T:], False), model, criterion, optimizer, 1, ignore_grad=True)[2]
    assert len(seen) == 1, seen
    assert log["sg_skipped"] == 0 and log["sg_steps"] == 1
    sums = [
        k for k in log if k.startswith(("sg_loss", "sg_hat_sq", "sg_true_sq", "sg_dot", "sg_injected", "sg_future"))
    ]
    assert sums and all(float(log[k]) == 0.0 for k in sums)
    assert all(p.grad is None or not p.grad.any() for p in task.dni.synthesizer.parameters())


def test_a_diverged_step_still_stops_at_its_update(tmp_path):
    torch.manual_seed(2)
    task, model, criterion, optimizer = build(tmp_path)
    tokens = torch.randint(4, V, (B, 2 * T + 1))
    step(task, model, criterion, optimizer, tokens, 0)
    with torch.no_grad():
        model.decoder.embed_tokens.weight[4:].fill_(math.inf)  # every gradient of this window breaks
    with pytest.raises(UsageError, match="training diverged at update 2"):  # read in the same transfer
        step(task, model, criterion, optimizer, tokens, 1)
    log = task.dni.pop_stats()  # the stats were taken before the check stopped the run
    assert log == {}


def test_settle_reads_once_and_returns_the_callers_values_in_order(host_reads):
    from altsg_fairseq.dni import BackwardInterface, Synthesizer

    interface = BackwardInterface(Synthesizer("gru", hidden=3, noise_std=0.0).double())
    W = torch.full((2, 3), math.nan, dtype=torch.float64)
    start, probe = interface.wrap_start(torch.randn(2, 3, dtype=torch.float64), tokens=4)
    ((start * W).sum() + probe).backward()
    seen = host_reads()
    assert interface.settle([torch.tensor(2.5), torch.tensor(7, dtype=torch.int64)]) == [2.5, 7.0]
    assert len(seen) == 1
    stats = interface.pop_stats()  # settled already: no second read
    assert len(seen) == 1 and stats["sg_skipped"] == 1 and float(stats["sg_loss"]) == 0.0
    assert interface.settle() == [] and len(seen) == 1  # nothing to read: no read
