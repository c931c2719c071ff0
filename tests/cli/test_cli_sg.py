"""Synthetic gradients through the real fairseq-train / fairseq-eval-lm."""

import math
import os
import socket
import subprocess

import pytest
import torch

from helpers import BIN, REPO, TRAIN_FLAGS, records, run_cli

# train on the small valid split (22k tokens) to keep the suite fast
SMALL = ["--train-subset", "valid", "--valid-subset", "test"]
SG_FLAGS = ["--use-sg", "--mixture", "--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base", "1"]


@pytest.fixture(scope="module")
def sg_run(sample_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("sg")
    common = [sample_bin, *TRAIN_FLAGS, *SMALL, "--batch-size", "10", "--bptt", "35", "--batch-size-valid", "10",
              "--save-dir", save, *SG_FLAGS, "--log-interval", "10"]
    first = run_cli("fairseq-train", *common, "--max-epoch", "3")
    resumed = run_cli("fairseq-train", *common, "--max-epoch", "4")
    return save, first.stdout + first.stderr, resumed.stdout + resumed.stderr


def test_phases_alternate_and_the_synthesizer_learns(sg_run):
    _, log, _ = sg_run
    epochs = records(log, "train")
    assert [float(e["train_sg_on"]) for e in epochs] == [0.0, 1.0, 0.0]  # restarts after epochs 1, 2, 4
    losses = [float(e["train_sg_loss"]) for e in epochs]
    assert all(math.isfinite(x) for x in losses) and losses[2] < losses[0]
    assert "epoch 002: lr 0.002, synthetic gradients on" in log
    assert float(epochs[-1]["train_sg_skipped"]) == 0


def test_resume_continues_phase_cycle_and_synthesizer(sg_run):
    save, first, resumed = sg_run
    assert "epoch 004: lr 0.001, synthetic gradients off" in resumed  # cycle [3, 4]: cos(pi / 2) -> 0.5
    state = torch.load(save / "checkpoint_last.pt")
    extra = state["model"]["_extra_state"]
    assert extra["synthesizer_config"] == {"core": "qrnn", "hidden": 50, "layers": 1}
    assert extra["synthesizer_optimizer"]["state"]  # Adam moments travel with the checkpoint
    # the resumed synthesizer starts where the first run ended, not afresh
    start_of_resume = float(records(resumed, "train_inner")[0]["sg_loss"])
    start_of_first = float(records(first, "train_inner")[0]["sg_loss"])
    assert start_of_resume < start_of_first / 10


def test_eval_lm_ignores_the_synthesizer(sg_run, sample_bin):
    save, _, _ = sg_run
    proc = run_cli("fairseq-eval-lm", sample_bin, "--user-dir", REPO / "altsg_fairseq", "--task", "alternating_lm",
                   "--path", save / "checkpoint_best.pt", "--gen-subset", "test", "--batch-size", "5", "--cpu")
    assert "Perplexity" in proc.stdout + proc.stderr


def test_resume_sg_takes_the_synthesizer_of_another_run(sg_run, sample_bin, tmp_path):
    save, _, _ = sg_run
    common = [sample_bin, *TRAIN_FLAGS, *SMALL, "--batch-size", "10", "--bptt", "35", "--max-update", "3",
              "--use-sg", "--whenswitch", "1", "--log-interval", "1"]
    proc = run_cli("fairseq-train", *common, "--save-dir", tmp_path / "resumed", "--resume-sg", save / "checkpoint_last.pt")
    log = proc.stdout + proc.stderr
    proc = run_cli("fairseq-train", *common, "--save-dir", tmp_path / "fresh")
    fresh = proc.stdout + proc.stderr
    assert float(records(log, "train_inner")[0]["sg_loss"]) < float(records(fresh, "train_inner")[0]["sg_loss"]) / 10
    for bad, message in [(tmp_path / "nope.pt", "no such file"), (save / "checkpoint_last.pt", "does not match")]:
        flags = ["--sg-type", "gru"] if bad.exists() else []
        proc = run_cli("fairseq-train", *common, "--resume-sg", bad, *flags, "--save-dir", tmp_path / "bad", check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXACT = ["--dropout", "0", "--dropout-hidden", "0", "--dropout-input", "0", "--dropout-embed", "0",
         "--weight-drop", "0", "--bptt", "20", "--max-update", "4", "--log-interval", "1"]


@pytest.mark.parametrize("sg", [[], ["--use-sg", "--whenswitch", "1", "--sg-type", "gru", "--sg-noise", "0"]],
                         ids=["real", "synthetic"])
def test_two_gloo_workers_equal_one_worker(sample_bin, tmp_path, sg):
    """2 CPU workers with b rows each == 1 worker with 2b rows, update by update."""
    flags = [sample_bin, *TRAIN_FLAGS, *SMALL, *EXACT, *sg]
    single = run_cli("fairseq-train", *flags, "--batch-size", "4", "--save-dir", tmp_path / "one")
    port = free_port()
    procs = [
        subprocess.Popen(
            [str(BIN / "fairseq-train"), *map(str, flags), "--batch-size", "2", "--save-dir", str(tmp_path / "two"),
             "--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-no-spawn",
             "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--device-id", "0",
             "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))  # one process per core
        for rank in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-3000:] + outs[1][1][-3000:]
    # the first worker (the others log warnings only) keeps the one thread it was given
    line = next(line for line in (outs[0][0] + outs[0][1]).splitlines() if "epoch 001: lr 0.002" in line)
    assert line.endswith("; 1 CPU thread"), line
    one = records(single.stdout + single.stderr, "train_inner")
    two = records(outs[0][0] + outs[0][1], "train_inner")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert a["bsz"] == b["bsz"] == "4"
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=2e-3)
        if sg:
            assert float(a["sg_loss"]) == pytest.approx(float(b["sg_loss"]), rel=1e-3)
