"""A stop signal (a scheduler's preemption) loses nothing: every worker saves at the same
update and exits with status 75, and the same command then finishes with weights, optimizer
and synthesizer bit-identical to a run never interrupted; the paper's method (--use-sg
--sg-type qrnn) in a synthetic phase, mid-epoch, 1 and 2 workers and under torchrun."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from helpers import BIN, REPO, TINY, TRAIN_FLAGS, finish_workers, free_port, per_update, start_workers, wait_for_update

EXIT_STATUS = 75  # the documented status of a run stopped by a signal (os.EX_TEMPFAIL)
# synthetic gradients on from the first epoch (--whenswitch 1 toggles them on at its start); an
# epoch of the sample corpus is ~50 windows of 10 rows, so update 30 is mid-epoch
FLAGS = [
    *TRAIN_FLAGS,
    *TINY,
    "--use-sg",
    "--sg-type",
    "qrnn",
    "--whenswitch",
    "1",
    "--max-update",
    "30",
    "--disable-validation",
    "--no-epoch-checkpoints",
]
TIMEOUT = 240  # seconds for a run's processes; they are killed past it (a hang fails)


def nested_equal(a, b, where="") -> None:
    """Every tensor and value of two checkpoint parts equal, bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            nested_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            nested_equal(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def assert_same_checkpoint(one, other) -> None:
    """The weights, the run state (carried rows, synthesizer and its optimizer, flags), the optimizer
    and the data position of two checkpoint_last.pt files: bit-identical."""
    a, b = (torch.load(save / "checkpoint_last.pt", weights_only=False) for save in (one, other))
    for part in ("model", "last_optimizer_state"):
        nested_equal(a[part], b[part], part)
    nested_equal(a["extra_state"]["train_iterator"], b["extra_state"]["train_iterator"], "train_iterator")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]


def train(n, args, stop=None, env=None, timeout=TIMEOUT):
    """fairseq-train as n workers (one plain process for n == 1); with ``stop`` = (signal, after
    update, ranks), that signal goes to those ranks once rank 0 has logged that update."""
    procs, logs = start_workers(n, *args, distributed=n > 1, rank_env=(lambda rank: env or {}) if env else None)
    if stop is not None:
        sig, after, ranks = stop
        try:
            wait_for_update(procs, logs[0], after, timeout=timeout)
        finally:
            for rank in ranks:
                if procs[rank].poll() is None:
                    procs[rank].send_signal(sig)
    return finish_workers(procs, logs, check=False, timeout=timeout)


def stopped_then_resumed(n, args, sig, ranks, save, env=None):
    """Stop a run with ``sig`` sent to ``ranks`` after update 5, check that every worker saved and
    exited with 75 in one line each, then run the same command again: the second run's outputs."""
    stopped = train(n, [*args, "--save-dir", save], stop=(sig, 5, ranks), env=env)
    for code, out in stopped:
        assert code == EXIT_STATUS, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert f"stopped on {sig.name} after update" in out and "the same command continues" in out, out[-2000:]
    at = {
        int(line.split("after update ")[1].split(";")[0])
        for _, out in stopped
        for line in out.splitlines()
        if "stopped on" in line
    }
    assert len(at) == 1 and 5 <= at.pop() < 30  # the same update on every worker, mid-run
    resumed = train(n, [*args, "--save-dir", save], env=env)
    assert all(code == 0 for code, _ in resumed), resumed[0][1][-3000:]
    return stopped, resumed


@pytest.mark.parametrize(
    "workers, sig, ranks",
    [
        (1, signal.SIGTERM, [0]),
        pytest.param(2, signal.SIGUSR1, [1], marks=pytest.mark.slow),  # one worker alone gets it
        pytest.param(2, signal.SIGTERM, [0, 1], marks=pytest.mark.slow),  # as Slurm sends it: to every task
    ],
    ids=["1-worker-SIGTERM", "2-workers-SIGUSR1-to-rank-1", "2-workers-SIGTERM-to-both"],
)
def test_a_stopped_run_continues_bit_identical_to_one_never_stopped(sample_bin, tmp_path, workers, sig, ranks):
    args = [sample_bin, *FLAGS, "--batch-size", str(10 // workers)]
    straight = train(workers, [*args, "--save-dir", tmp_path / "straight"])
    assert all(code == 0 for code, _ in straight), straight[0][1][-3000:]
    stopped, resumed = stopped_then_resumed(workers, args, sig, ranks, tmp_path / "stopped")
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "stopped")
    # the losses the two parts logged are the uninterrupted run's, in a synthetic phase
    whole = per_update(straight[0][1])
    parts = {**per_update(stopped[0][1]), **per_update(resumed[0][1])}
    assert parts == whole and all(sg is not None for _, sg in whole.values())


def test_a_named_signal_stops_and_requeue_calls_scontrol(sample_bin, tmp_path):
    """--stop-signals names the signals (here SIGUSR2 alone); --requeue asks Slurm (a stand-in
    scontrol that records its arguments) to requeue $SLURM_JOB_ID after the checkpoint is written."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    args = [sample_bin, *FLAGS, "--batch-size", "10", "--stop-signals", "SIGUSR2", "--requeue"]
    ((code, out),) = train(1, [*args, "--save-dir", tmp_path / "run"], stop=(signal.SIGUSR2, 3, [0]), env=env)
    assert code == EXIT_STATUS and "stopped on SIGUSR2" in out, out[-3000:]
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()
    assert calls.read_text().split() == ["requeue", "4242"]


def test_handlers_are_put_back_when_the_run_ends(sample_bin, tmp_path):
    """In one Python process: the signal handlers and fairseq-train's functions before a run are
    there again after it (a user's own handler is not lost)."""
    program = f"""
import signal, sys
import fairseq_cli.train as train
mine = lambda signum, frame: None
signal.signal(signal.SIGUSR1, mine)
before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1), train.validate_and_save)
sys.argv = ["fairseq-train", *{[str(a) for a in (sample_bin, *FLAGS, "--batch-size", "10", "--max-update", "2")]!r},
            "--save-dir", {str(tmp_path)!r}]
train.cli_main()
after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1), train.validate_and_save)
print("same" if after == before and after[1] is mine else f"changed: {{before}} -> {{after}}")
"""
    proc = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "same"


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, agent_flags",
    [(signal.SIGTERM, []), (signal.SIGUSR1, ["--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"])],
    ids=["SIGTERM", "SIGUSR1-added-to-the-agent's"],
)
def test_torchrun_forwards_the_signal_and_the_workers_save(sample_bin, tmp_path, sig, agent_flags):
    """Under torchrun the agent gets the signal and sends it to its workers (killing them 30 s
    later); it handles SIGTERM, SIGINT, SIGHUP and SIGQUIT, and others named by --signals-to-handle
    (SIGUSR1 would kill the agent itself). The workers save at one update and exit 75; the same
    torchrun command continues exactly."""
    args = [sample_bin, *FLAGS, "--batch-size", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

    def torchrun(save, sig=None):
        log = open(tmp_path / f"{save}.log", "w+")
        command = [str(BIN / "torchrun"), *agent_flags, "--nproc_per_node", "2", "--master_port", str(free_port())]
        proc = subprocess.Popen(
            [*command, str(BIN / "fairseq-train"), *map(str, args), "--save-dir", str(tmp_path / save)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            if sig is not None:
                wait_for_update([proc], log, 5, timeout=TIMEOUT)
                proc.send_signal(sig)
            proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        return proc.returncode, log.read()

    code, out = torchrun("straight")
    assert code == 0, out[-3000:]
    code, out = torchrun("stopped", sig)
    assert code != 0 and out.count(f"stopped on {sig.name} after update") == 2, out[-3000:]
    code, out = torchrun("stopped")
    assert code == 0, out[-3000:]
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "stopped")


def test_the_same_signal_twice_goes_to_the_handler_before_the_run():
    """The first stop signal is noted (the run stops at its next update); a second one of the same
    kind puts the earlier handler back and sends it again (a run stuck before its next update can
    still be stopped); leaving puts every earlier handler back."""
    from altsg_fairseq.training_run import Preemption

    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        mine = signal.getsignal(signal.SIGUSR2)
        with Preemption([signal.SIGUSR2, signal.SIGUSR1]) as preemption:
            signal.raise_signal(signal.SIGUSR2)
            assert preemption.received == signal.SIGUSR2 and calls == []
            signal.raise_signal(signal.SIGUSR2)
            assert calls == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is mine
        assert signal.getsignal(signal.SIGUSR2) is mine and signal.getsignal(signal.SIGUSR1) is not None
    finally:
        signal.signal(signal.SIGUSR2, before)
