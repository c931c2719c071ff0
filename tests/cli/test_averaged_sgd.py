"""--optimizer nt_asgd through the real fairseq-train: the switch to averaged SGD fires at
the end-of-epoch validation awd-lstm-lm's rule names, validations in the middle of an epoch
do not move it, checkpoints hold the averages, and a run resumed across or after the switch
equals the straight run (paper mode: synthetic phases)."""

import pytest
import torch

from helpers import SAMPLE, TRAIN_FLAGS, binarize_with, per_update, records, run_cli

# lr 30 as AWD, on a short corpus (8 updates an epoch) whose validation losses rise now and then
FLAGS = [
    *TRAIN_FLAGS,
    "--optimizer",
    "nt_asgd",
    "--lr",
    "30",
    "--nonmono",
    "1",
    "--batch-size",
    "10",
    "--bptt",
    "35",
    "--use-sg",
    "--whenswitch",
    "1",
    "--no-epoch-checkpoints",
    "--max-epoch",
    "5",
]


@pytest.fixture(scope="module")
def short_bin(sample_bin, tmp_path_factory):
    """A short corpus in the sample's vocabulary: 60 lines of its valid split to train on, 30 of its
    test split to validate on."""
    text = tmp_path_factory.mktemp("short-text")
    (text / "train.txt").write_text("".join((SAMPLE / "valid.txt").read_text().splitlines(True)[:60]))
    (text / "valid.txt").write_text("".join((SAMPLE / "test.txt").read_text().splitlines(True)[:30]))
    data = tmp_path_factory.mktemp("short-bin")
    binarize_with(sample_bin / "dict.txt", data, text / "train.txt", text / "valid.txt")
    return data


def run(sample_bin, save, *extra):
    proc = run_cli("fairseq-train", sample_bin, *FLAGS, *extra, "--save-dir", save)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def straight(short_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("nt-asgd")
    return save, run(short_bin, save)


def first_switch(valid_losses, nonmono):
    """awd-lstm-lm's trigger, written from its main.py (it validates once an epoch): the 1-based
    validation whose loss is worse than the best of all validations before the last ``nonmono``."""
    for t, loss in enumerate(valid_losses):
        if t > nonmono and loss > min(valid_losses[: t - nonmono]):
            return t + 1
    return None


def test_the_switch_fires_at_the_validation_awds_rule_names(straight):
    save, log = straight
    valid = [float(r["valid_loss"]) for r in records(log, "valid")]
    assert [int(r["epoch"]) for r in records(log, "valid")] == list(range(1, 6))  # one validation an epoch
    expected = first_switch(valid, 1)
    assert expected is not None and expected < len(valid)  # the run has updates after the switch
    lines = [line for line in log.splitlines() if "averaged SGD from now on" in line]
    assert len(lines) == 1 and f"validation {expected} (end of epoch {expected}): " in lines[0]
    # after the switch the checkpoint's weights are the averages, the iterates kept beside them
    state = torch.load(save / "checkpoint_last.pt")
    weights = [w for k, w in state["model"].items() if k != "_extra_state"]
    per_param = state["last_optimizer_state"]["state"].values()
    assert len(per_param) == len(weights)
    assert all(any(torch.equal(p["ax"], w) for w in weights) for p in per_param)
    assert all(not torch.equal(p["ax"], p["iterate"]) for p in per_param)


def test_validations_in_the_middle_of_an_epoch_do_not_count(straight, short_bin, tmp_path):
    """The same run with validations after every 3 updates and mid-epoch saves every 4 (fairseq
    validates before each): the same switch, at the same epoch, the same updates, and a history of
    one validation loss per epoch up to the switch (before, every validation entered it, and this
    run switched at update 6, in the first epoch, instead of at the end of the third)."""
    save, log = straight
    mid = run(short_bin, tmp_path, "--validate-interval-updates", "3", "--save-interval-updates", "4")
    epochs = [int(r["epoch"]) for r in records(mid, "valid")]
    assert len(epochs) > 2 * len(set(epochs))  # validations in the middle of the epochs
    assert "validations in the middle of an epoch are not counted by its switch" in mid
    switch = [line[line.index("validation") :] for line in log.splitlines() if "averaged SGD from now on" in line]
    assert switch == [
        line[line.index("validation") :] for line in mid.splitlines() if "averaged SGD from now on" in line
    ]
    assert per_update(mid) == per_update(log)
    end_of_epoch = [float(r["valid_loss"]) for r in records(log, "valid")]
    switched_at = first_switch(end_of_epoch, 1)
    for ckpt in (save, tmp_path):
        history = torch.load(ckpt / "checkpoint_last.pt")["last_optimizer_state"]["param_groups"][0]["history"]
        assert switched_at is not None and history == pytest.approx(
            end_of_epoch[:switched_at], abs=6e-4
        )  # the log rounds to 3 decimals


@pytest.mark.slow  # the default suite keeps the switch and the mid-epoch validations; exact resume: test_resume.py
@pytest.mark.parametrize("stop", [12, 30], ids=["before-switch", "after-switch"])
def test_resumed_equals_straight(straight, short_bin, tmp_path, stop):
    save, log = straight
    first = run(short_bin, tmp_path, "--max-update", str(stop))
    resumed = run(short_bin, tmp_path)
    assert set(per_update(first)) | set(per_update(resumed)) == set(per_update(log))
    assert all(per_update(log)[u] == v for u, v in per_update(resumed).items())
    a, b = torch.load(save / "checkpoint_last.pt"), torch.load(tmp_path / "checkpoint_last.pt")
    for key, weight in a["model"].items():
        if key != "_extra_state":
            assert torch.equal(weight, b["model"][key]), key
    for x, y in zip(a["last_optimizer_state"]["state"].values(), b["last_optimizer_state"]["state"].values()):
        assert torch.equal(x["ax"], y["ax"]) and x["step"] == y["step"] and x["eta"] == y["eta"]
    assert (
        a["last_optimizer_state"]["param_groups"][0]["history"]
        == b["last_optimizer_state"]["param_groups"][0]["history"]
    )
