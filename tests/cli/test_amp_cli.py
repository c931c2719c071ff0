"""Mixed precision on a CPU through the real CLIs: ``--amp`` trains the paper's
method (QRNN synthesizer, a synthetic phase) in bfloat16 autocast with float32
weights and state, resumes bit for bit, and fairseq-eval-lm, fairseq-interactive
and scripts/score_text.py score in bfloat16 within 0.5% of float32."""

import re
import subprocess
import sys

import pytest
import torch

from helpers import PLUGIN, REPO, SAMPLE, TRAIN_FLAGS, per_update, records, run_cli

FLAGS = [
    *TRAIN_FLAGS,
    "--amp",
    "--train-subset",
    "valid",
    "--valid-subset",
    "test",
    "--batch-size",
    "10",
    "--bptt",
    "70",
    "--use-sg",
    "--sg-type",
    "qrnn",
    "--whenswitch",
    "2",
    "--no-epoch-checkpoints",
]
EVAL = [
    "--user-dir",
    REPO / "altsg_fairseq",
    "--task",
    "alternating_lm",
    "--cpu",
    "--gen-subset",
    "test",
    "--batch-size",
    "1",
    "--bptt",
    "70",
]  # as scripts/score_text.py scores the test text


@pytest.fixture(scope="module")
def bf16_runs(sample_bin, tmp_path_factory):
    """Two epochs (real gradients, then synthetic ones) straight, and stopped mid-epoch 2 then resumed."""
    root = tmp_path_factory.mktemp("amp")
    straight = run_cli("fairseq-train", sample_bin, *FLAGS, "--max-epoch", "2", "--save-dir", root / "straight")
    run_cli("fairseq-train", sample_bin, *FLAGS, "--max-update", "45", "--save-dir", root / "resumed")
    resumed = run_cli("fairseq-train", sample_bin, *FLAGS, "--max-epoch", "2", "--save-dir", root / "resumed")
    return root, straight, resumed


def test_amp_trains_in_bfloat16_and_keeps_everything_else_float32(bf16_runs):
    root, straight, _ = bf16_runs
    log = straight.stdout + straight.stderr
    assert "precision: bfloat16 autocast on the CPU (--amp)" in log
    assert "epoch 002: lr 0.002, synthetic gradients on" in log
    for r in records(log, "train_inner"):
        assert float(r["sg_skipped"]) == 0 and 0 < float(r["sg_loss"]) < float("inf"), r
    state = torch.load(root / "straight" / "checkpoint_last.pt")
    floats = {k: v.dtype for k, v in state["model"].items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    assert set(floats.values()) == {torch.float32}, floats  # weights and the carried rows
    extra = state["model"]["_extra_state"]
    assert all(t.dtype == torch.float32 for layer in extra["carried"] for t in layer if t is not None)
    assert all(v.dtype == torch.float32 for v in extra["synthesizer"].values())
    moments = [
        v
        for s in state["last_optimizer_state"]["state"].values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    ]
    assert moments and all(v.dtype == torch.float32 for v in moments)


def test_amp_resumes_mid_epoch_bit_for_bit(bf16_runs):
    root, straight, resumed = bf16_runs
    a, b = per_update(straight), per_update(resumed)
    assert min(b) == 46 and max(b) == max(a) > 50  # the rest of epoch 2 (from window 15 of ~31), synthetic
    assert all(b[u] == a[u] for u in b), [(u, a[u], b[u]) for u in b if a[u] != b[u]][:3]
    w, wr = (torch.load(root / run / "checkpoint_last.pt")["model"] for run in ("straight", "resumed"))
    assert all(torch.equal(w[k], wr[k]) for k in w if isinstance(w[k], torch.Tensor))


def perplexity(proc):
    return float(re.search(r"Perplexity: ([0-9.]+)", proc.stdout + proc.stderr).group(1))


@pytest.mark.slow  # bf16 training stays in the default suite
def test_evaluation_and_generation_in_bfloat16(bf16_runs, sample_bin):
    root, _, _ = bf16_runs
    checkpoint = root / "straight" / "checkpoint_last.pt"
    fp32 = run_cli("fairseq-eval-lm", sample_bin, *EVAL, "--path", checkpoint)
    bf16 = run_cli("fairseq-eval-lm", sample_bin, *EVAL, "--path", checkpoint, "--amp")
    assert "precision: float32" in fp32.stdout + fp32.stderr
    assert "precision: bfloat16 autocast on the CPU" in bf16.stdout + bf16.stderr
    assert perplexity(bf16) == pytest.approx(perplexity(fp32), rel=5e-3)
    proc = run_cli(
        "fairseq-interactive",
        sample_bin,
        *PLUGIN,
        "--path",
        checkpoint,
        "--cpu",
        "--amp",
        "--beam",
        "1",
        "--max-len-b",
        "6",
        input="the city of\n",
    )
    hypos = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hypos) == 1 and hypos[0][2].startswith("the city of ") and float(hypos[0][1]) < 0
    assert "precision: bfloat16 autocast on the CPU" in proc.stdout + proc.stderr

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "score_text.py"),
            str(SAMPLE / "test.txt"),
            str(checkpoint),
            "--cpu",
            "--amp",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = float(re.search(r"perplexity ([0-9.]+)", proc.stdout.splitlines()[-1]).group(1))
    assert scored == pytest.approx(perplexity(fp32), rel=5e-3)
