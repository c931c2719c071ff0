"""Resuming with another optimizer, criterion, precision, model or number of rows, through the real
fairseq-train: one line before anything in the save dir changes (before, fairseq's AssertionError or the
iterator's refusal came after curves.csv had been renamed), and --reset-optimizer continues."""

import shutil

import pytest
import torch

from helpers import SHORT_EPOCHS, TRAIN_FLAGS, records, run_cli

FLAGS = [
    *TRAIN_FLAGS,
    *SHORT_EPOCHS,
    *["--embed-dim", "16", "--hidden-dim", "16", "--batch-size", "10", "--bptt", "35"],
    "--max-valid-steps",  # validation (which writes curves.csv's row) on a few windows
    "3",
]


def train(data, save, *flags, check=True):
    """fairseq-train with FLAGS, ``flags`` last (argparse keeps the last of a repeated flag)."""
    return run_cli("fairseq-train", data, *FLAGS, *flags, "--save-dir", save, check=check)


@pytest.fixture(scope="module")
def stopped(sample_bin, tmp_path_factory):
    """A run of Adam with L2 stopped after 4 updates, in the middle of its first epoch."""
    save = tmp_path_factory.mktemp("adam-l2")
    train(sample_bin, save, "--optimizer", "adam_l2", "--lr", "1e-3", "--max-update", "4")
    assert (save / "curves.csv").is_file()
    return save


def files(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def resume(stopped, tmp_path):
    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    return files(tmp_path)


CHANGES = [
    # the AWD workflow: Adam first, then NT-ASGD at lr 30 (the lr change made the run rename curves.csv first)
    ("optimizer", ["--optimizer", "nt_asgd", "--lr", "30"], "(--optimizer adam_l2 -> nt_asgd); pass --reset-optimizer"),
    ("criterion", ["--criterion", "cross_entropy"], "(--criterion synthetic_gradient_lm -> cross_entropy)"),
    ("precision", ["--amp"], "(precision float32 -> --amp); pass --reset-optimizer"),
    ("model size", ["--hidden-dim", "24"], "the checkpoint's model is not this one"),
    ("arch", ["--arch", "qrnn_lm_ptb", "--embed-dim", "16", "--hidden-dim", "16"], "the checkpoint's model is not"),
    ("rows", ["--batch-size", "6"], "the checkpoint stopped in the middle of epoch 1 with 10 rows"),
]


@pytest.mark.parametrize(
    "case,flags,message",
    # the default suite runs the optimizer (the AWD workflow); the other changes are slow tests
    [pytest.param(*c, id=c[0], marks=() if c[0] == "optimizer" else pytest.mark.slow) for c in CHANGES],
)
def test_a_change_that_cannot_resume_is_one_line_before_anything_changes(
    sample_bin, stopped, tmp_path, case, flags, message
):
    before = resume(stopped, tmp_path)
    proc = train(
        sample_bin, tmp_path, "--optimizer", "adam_l2", "--lr", "1e-3", *flags, "--max-update", "8", check=False
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error:") and message in last, last
    assert files(tmp_path) == before  # the same files, byte for byte (curves.csv not renamed)


def test_reset_optimizer_continues_with_the_new_optimizer(sample_bin, stopped, tmp_path):
    before = resume(stopped, tmp_path)
    proc = train(sample_bin, tmp_path, "--optimizer", "nt_asgd", "--lr", "30", "--reset-optimizer", "--max-update", "2")
    log = proc.stdout + proc.stderr
    warning = next(line for line in log.splitlines() if "resuming with changed flags" in line)
    assert "--lr [0.001] -> [30.0]" in warning and "--optimizer adam_l2 -> nt_asgd" in warning
    assert (tmp_path / "curves.previous-1.csv").read_bytes() == before["curves.csv"]
    state = torch.load(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["optimizer_name"] == "FairseqNTASGD"
    # the data position is kept (4 windows, then 2 more of the same epoch); fairseq counts updates from 0
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] == 6
    assert [int(r["epoch"]) for r in records(log, "train_inner")] == [1, 1]
    assert state["optimizer_history"][-1]["num_updates"] == 2


def test_another_lr_scheduler_is_listed_and_continues(sample_bin, stopped, tmp_path):
    """fairseq loads the lr scheduler's state (its best loss) into another scheduler without a word;
    the change is listed with the other changed flags and the curves are kept apart."""
    before = resume(stopped, tmp_path)
    proc = train(
        sample_bin,
        tmp_path,
        "--optimizer",
        "adam_l2",
        "--lr",
        "1e-3",
        "--lr-scheduler",
        "warm_restarts",
        "--max-update",
        "5",
    )
    warning = next(line for line in (proc.stdout + proc.stderr).splitlines() if "resuming with changed flags" in line)
    assert "--lr-scheduler fixed -> warm_restarts" in warning
    assert (tmp_path / "curves.previous-1.csv").read_bytes() == before["curves.csv"]
    assert torch.load(tmp_path / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 5


def test_a_checkpoint_that_does_not_name_its_optimizer(sample_bin, stopped, tmp_path):
    """A checkpoint of an earlier version (its run's flags without the optimizer's name): fairseq's own
    check, AssertionError: Optimizer does not match, as one line; nothing changed either."""
    resume(stopped, tmp_path)
    state = torch.load(tmp_path / "checkpoint_last.pt")
    experiment = state["model"]["_extra_state"]["experiment"]
    for name in ("--optimizer", "--criterion", "--lr-scheduler", "precision"):
        del experiment[name]
    torch.save(state, tmp_path / "checkpoint_last.pt")
    before = files(tmp_path)
    proc = train(sample_bin, tmp_path, "--optimizer", "nt_asgd", "--lr", "30", "--max-update", "8", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error: the checkpoint's optimizer state does not fit this run (AdamL2 vs")
    assert "pass --reset-optimizer" in last
    assert files(tmp_path) == before
