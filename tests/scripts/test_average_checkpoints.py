"""scripts/average_checkpoints.py on the plugin's checkpoints (fairseq's own script stops on them):
N copies of one checkpoint score exactly as it does under fairseq-eval-lm; two average to the mean
of their weights; inputs that are not one model stop in one line."""

import subprocess
import sys

import pytest
import torch

from helpers import PLUGIN, REPO, TRAIN_FLAGS, eval_lm_scores, run_cli

SCRIPT = REPO / "scripts" / "average_checkpoints.py"


def average(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def two_checkpoints(sample_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("averaged")
    run_cli(
        "fairseq-train", sample_bin, *TRAIN_FLAGS, "--batch-size", "4", "--bptt", "20", "--max-update", "4",
        "--save-interval-updates", "2", "--disable-validation", "--save-dir", save,
    )  # fmt: skip
    return save, save / "checkpoint_1_2.pt", save / "checkpoint_1_4.pt"


def scores(data, checkpoint):
    proc = run_cli("fairseq-eval-lm", data, *PLUGIN, "--path", checkpoint, "--gen-subset", "valid", "--batch-size", 4,
                   "--cpu")  # fmt: skip
    return eval_lm_scores(proc.stdout + proc.stderr)


def test_copies_of_one_checkpoint_score_as_it_and_two_average_to_their_mean(sample_bin, two_checkpoints, tmp_path):
    save, a, b = two_checkpoints
    copies = average("--inputs", b, b, b, "--output", tmp_path / "copies.pt")
    assert copies.returncode == 0, copies.stderr
    assert scores(sample_bin, tmp_path / "copies.pt") == scores(sample_bin, b)
    both = average("--inputs", a, b, "--output", tmp_path / "both.pt")
    assert both.returncode == 0, both.stderr
    wa, wb, mean = (torch.load(p, weights_only=False)["model"] for p in (a, b, tmp_path / "both.pt"))
    floats = [k for k in wa if torch.is_tensor(wa[k]) and wa[k].is_floating_point()]
    assert floats and not all(torch.equal(wa[k], wb[k]) for k in floats)
    for k in floats:
        assert torch.equal(mean[k], ((wa[k].double() + wb[k].double()) / 2).to(wa[k].dtype)), k
    assert mean["_extra_state"]["carried"][0][0].equal(wb["_extra_state"]["carried"][0][0])  # the last input's


@pytest.mark.slow  # the averaging itself stays in the default suite
def test_inputs_that_are_not_one_model_are_one_line(sample_bin, two_checkpoints, tmp_path):
    save, a, _ = two_checkpoints
    other = tmp_path / "other"
    run_cli(
        "fairseq-train", sample_bin, *TRAIN_FLAGS, "--hidden-dim", "48", "--batch-size", "4", "--bptt", "20",
        "--max-update", "1", "--disable-validation", "--save-dir", other,
    )  # fmt: skip
    for args, message in [
        (["--inputs", a, other / "checkpoint_last.pt"], "not the same model"),
        (["--inputs", save], "is a folder: give --last N"),
        (["--inputs", save, "--last", "2"], "fewer than --last 2"),
        (["--inputs", tmp_path / "missing.pt"], "no such checkpoint file"),
    ]:
        proc = average(*args, "--output", tmp_path / "out.pt")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("average_checkpoints.py: error: ") and message in proc.stderr, proc.stderr
