"""Synthetic gradients through the real fairseq-train / fairseq-eval-lm."""

import math

import pytest
import torch

from helpers import REPO, TRAIN_FLAGS, eval_lm_scores, records, run_cli

# train on the small valid split (22k tokens) to keep the suite fast
SMALL = ["--train-subset", "valid", "--valid-subset", "test"]
SG_FLAGS = ["--use-sg", "--mixture", "--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base", "1"]


@pytest.fixture(scope="module")
def sg_run(sample_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("sg")
    common = [
        sample_bin,
        *TRAIN_FLAGS,
        *SMALL,
        "--batch-size",
        "10",
        "--bptt",
        "35",
        "--batch-size-valid",
        "10",
        "--save-dir",
        save,
        *SG_FLAGS,
        "--log-interval",
        "10",
        "--tensorboard-logdir",
        save / "tensorboard",
    ]
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


@pytest.mark.slow  # the phases test stays in the default suite
def test_eval_lm_ignores_the_synthesizer(sg_run, sample_bin, tmp_path):
    """The --use-sg checkpoint scores the test text exactly as the same one whose synthesizer is all NaN."""
    save, _, _ = sg_run
    state = torch.load(save / "checkpoint_best.pt", weights_only=False)
    synthesizer = state["model"]["_extra_state"]["synthesizer"]
    assert synthesizer  # the checkpoint does hold a (trained) synthesizer
    for tensor in synthesizer.values():
        tensor.fill_(float("nan"))
    torch.save(state, tmp_path / "nan_synthesizer.pt")

    def scores(checkpoint):
        proc = run_cli(
            "fairseq-eval-lm",
            sample_bin,
            "--user-dir",
            REPO / "altsg_fairseq",
            "--task",
            "alternating_lm",
            "--path",
            checkpoint,
            "--gen-subset",
            "test",
            "--batch-size",
            "5",
            "--cpu",
        )
        return eval_lm_scores(proc.stdout + proc.stderr)

    loss, ppl = scores(save / "checkpoint_best.pt")
    assert math.isfinite(loss) and 1 < ppl == pytest.approx(2**loss, rel=1e-3)
    assert scores(tmp_path / "nan_synthesizer.pt") == (loss, ppl)


@pytest.mark.slow  # 15-25 s
def test_resume_sg_takes_the_synthesizer_of_another_run(sg_run, sample_bin, tmp_path):
    save, _, _ = sg_run
    common = [
        sample_bin,
        *TRAIN_FLAGS,
        *SMALL,
        "--batch-size",
        "10",
        "--bptt",
        "35",
        "--max-update",
        "3",
        "--use-sg",
        "--whenswitch",
        "1",
        "--log-interval",
        "1",
    ]
    proc = run_cli(
        "fairseq-train", *common, "--save-dir", tmp_path / "resumed", "--resume-sg", save / "checkpoint_last.pt"
    )
    log = proc.stdout + proc.stderr
    proc = run_cli("fairseq-train", *common, "--save-dir", tmp_path / "fresh")
    fresh = proc.stdout + proc.stderr
    assert float(records(log, "train_inner")[0]["sg_loss"]) < float(records(fresh, "train_inner")[0]["sg_loss"]) / 10
    for bad, message in [(tmp_path / "nope.pt", "no such file"), (save / "checkpoint_last.pt", "does not match")]:
        flags = ["--sg-type", "gru"] if bad.exists() else []
        proc = run_cli(
            "fairseq-train", *common, "--resume-sg", bad, *flags, "--save-dir", tmp_path / "bad", check=False
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1]


def tensorboard_scalars(folder):
    """{tag: [values in update order]} of the event files in ``folder`` (TFRecord framing: length, crc, event, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in folder.glob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    # one file per run, listed in no set order: the update number orders them
    return {tag: [v for _, v in sorted(pairs, key=lambda p: p[0])] for tag, pairs in scalars.items()}


def test_tensorboard_holds_the_plugins_scalars(sg_run):
    save, log, _ = sg_run
    train = tensorboard_scalars(save / "tensorboard" / "train")
    for tag in [
        "loss",
        "nll_loss",
        "ppl",
        "ar",
        "tar",
        "lr",
        "sg_on",
        "sg_loss",
        "sg_cos",
        "sg_cos_l0",
        "sg_cos_l1",
        "sg_norm_ratio",
        "sg_rel_error",
        "sg_inject_ratio",
        "sg_skipped",
    ]:
        assert tag in train, tag
    assert train["sg_on"][:3] == [0.0, 1.0, 0.0]  # the phase of epochs 1, 2, 3
    assert all(-1 <= c <= 1 for c in train["sg_cos"])
    assert [round(v, 3) for v in train["nll_loss"][:3]] == [float(r["train_nll_loss"]) for r in records(log, "train")]
    valid = tensorboard_scalars(save / "tensorboard" / "test")  # --valid-subset test
    assert {"loss", "nll_loss", "ppl"} <= set(valid) and len(valid["loss"]) >= 3
    assert "sg_cos" in tensorboard_scalars(save / "tensorboard" / "train_inner")


def test_wandb_where_installed(sample_bin, tmp_path):
    pytest.importorskip("wandb")
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        *SMALL,
        "--batch-size",
        "10",
        "--max-update",
        "3",
        "--use-sg",
        "--whenswitch",
        "1",
        "--save-dir",
        tmp_path / "ck",
        "--wandb-project",
        "altsg-test",
        cwd=tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)},
    )
    assert "Traceback" not in proc.stderr and any((tmp_path / "wandb").iterdir())
