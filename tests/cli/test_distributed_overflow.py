"""Two gloo workers (real fairseq-train processes) where one worker's gradient at the
start state is not finite in one update, as a dynamic loss scale provokes by design:
fairseq sums the workers' logging outputs as one buffer, so both must send the same
keys; both finish every update and the log counts the skipped window.

The fault is put into rank 1 alone by a ``sitecustomize`` on that process's
PYTHONPATH (test-only, in the test's temp dir): it wraps ``TrainSynthesizer``'s
backward so that the true gradient it sees in the second update is NaN, while
the gradient passed on to the model stays the real one.
"""

import os

import pytest

from helpers import TRAIN_FLAGS, records, run_workers

TIMEOUT = 240  # seconds for both workers; they are killed past it

FAULT = """
import altsg_fairseq.dni.synthetic_gradient as sg

_backward, _calls = sg.TrainSynthesizer.backward, [0]


def backward(ctx, grad_state, grad_probe):
    _calls[0] += 1
    if _calls[0] == 2:  # the second update's window: its true gradient overflows on this worker only
        out = _backward(ctx, grad_state * float("nan"), grad_probe)
        return (grad_state, *out[1:])
    return _backward(ctx, grad_state, grad_probe)


sg.TrainSynthesizer.backward = staticmethod(backward)
"""


@pytest.mark.slow  # about 20 s: two fairseq-train processes start
def test_a_worker_whose_start_gradient_overflows_does_not_stall_the_others(sample_bin, tmp_path):
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(FAULT)
    args = [
        sample_bin,
        *TRAIN_FLAGS,
        "--train-subset",
        "valid",
        "--embed-dim",
        "8",
        "--hidden-dim",
        "8",
        "--use-sg",
        "--sg-hidden",
        "4",
        "--batch-size",
        "2",
        "--bptt",
        "20",
        "--max-update",
        "3",
        "--disable-validation",
        "--no-save",
        "--save-dir",
        tmp_path / "ck",
    ]
    # rank 1 alone finds the fault first on its PYTHONPATH
    path = os.pathsep.join(filter(None, [str(fault), os.environ.get("PYTHONPATH")]))
    (code0, log0), (code1, log1) = run_workers(
        2, *args, check=False, timeout=TIMEOUT, rank_env=lambda rank: {"PYTHONPATH": path} if rank == 1 else {}
    )
    assert code0 is not None and code1 is not None, f"the workers stalled past {TIMEOUT} s:\n{log0[-3000:]}"
    assert code0 == 0 and code1 == 0, f"{log0[-3000:]}\n----\n{log1[-3000:]}"
    assert "collective mismatch" not in log0 + log1
    updates = {int(r["num_updates"]): r for r in records(log0, "train_inner")}
    assert sorted(updates) == [1, 2, 3]
    assert [float(updates[u]["sg_skipped"]) for u in (1, 2, 3)] == [0, 1, 0]  # rank 1's window of update 2
    assert all(float(r["sg_loss"]) >= 0 for r in updates.values())  # rank 0's windows still measured
