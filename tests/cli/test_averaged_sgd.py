"""--optimizer nt_asgd through the real fairseq-train: the switch to averaged SGD fires at
the validation awd-lstm-lm's rule names, checkpoints hold the averages, and a run resumed
across or after the switch equals the straight run (paper mode: synthetic phases)."""

import pytest
import torch

from helpers import TRAIN_FLAGS, per_update, records, run_cli

# lr 30 as AWD; validations every 5 updates make validation losses that rise now and then
FLAGS = [
    *TRAIN_FLAGS,
    "--optimizer",
    "nt_asgd",
    "--lr",
    "30",
    "--nonmono",
    "1",
    "--train-subset",
    "valid",
    "--valid-subset",
    "test",
    "--batch-size",
    "10",
    "--bptt",
    "35",
    "--validate-interval-updates",
    "5",
    "--use-sg",
    "--whenswitch",
    "1",
    "--no-epoch-checkpoints",
    "--max-update",
    "60",
]


def run(sample_bin, save, *extra):
    proc = run_cli("fairseq-train", sample_bin, *FLAGS, *extra, "--save-dir", save)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def straight(sample_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("nt-asgd")
    return save, run(sample_bin, save)


def first_switch(valid_losses, nonmono):
    """awd-lstm-lm's trigger, written from its main.py: the 1-based validation whose loss is worse
    than the best of all validations before the last ``nonmono``."""
    for t, loss in enumerate(valid_losses):
        if t > nonmono and loss > min(valid_losses[: t - nonmono]):
            return t + 1
    return None


def test_the_switch_fires_at_the_validation_awds_rule_names(straight):
    save, log = straight
    valid = [float(r["test_loss"]) for r in records(log, "test")]
    expected = first_switch(valid, 1)
    assert expected is not None and expected < len(valid)  # the run has updates after the switch
    lines = [line for line in log.splitlines() if "averaged SGD from now on" in line]
    assert len(lines) == 1 and f"validation {expected}: " in lines[0]
    # after the switch the checkpoint's weights are the averages, the iterates kept beside them
    state = torch.load(save / "checkpoint_last.pt")
    weights = [w for k, w in state["model"].items() if k != "_extra_state"]
    per_param = state["last_optimizer_state"]["state"].values()
    assert len(per_param) == len(weights)
    assert all(any(torch.equal(p["ax"], w) for w in weights) for p in per_param)
    assert all(not torch.equal(p["ax"], p["iterate"]) for p in per_param)


@pytest.mark.parametrize("stop", [pytest.param(25, marks=pytest.mark.slow), 50], ids=["before-switch", "after-switch"])
def test_resumed_equals_straight(straight, sample_bin, tmp_path, stop):
    save, log = straight
    first = run(sample_bin, tmp_path, "--max-update", str(stop))
    resumed = run(sample_bin, tmp_path)
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
