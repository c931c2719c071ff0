"""Exact resume: a run killed and resumed from checkpoint_last.pt gives the same
training losses as an uninterrupted one, across a phase switch and a warm
restart, at an epoch boundary and in the middle of an epoch."""

import pytest

from helpers import TRAIN_FLAGS, per_update, run_cli

FLAGS = [
    "--train-subset",
    "valid",
    "--valid-subset",
    "test",
    "--batch-size",
    "10",
    "--bptt",
    "35",
    "--log-interval",
    "1",
    "--use-sg",
    "--whenswitch",
    "2",
    "--mixture",
    "--lr-scheduler",
    "warm_restarts",
    "--restart-lr",
    "--restart-base",
    "1",
    "--no-epoch-checkpoints",
]


@pytest.fixture(scope="module")
def straight(sample_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("straight")
    return per_update(
        run_cli("fairseq-train", sample_bin, *TRAIN_FLAGS, *FLAGS, "--max-epoch", "3", "--save-dir", save)
    )


@pytest.mark.parametrize(
    "stop",
    [pytest.param(["--max-epoch", "1"], marks=pytest.mark.slow), ["--max-update", "80"]],
    ids=["epoch-boundary", "mid-epoch"],
)
def test_resume_gives_the_same_losses(straight, sample_bin, tmp_path, stop):
    first = per_update(run_cli("fairseq-train", sample_bin, *TRAIN_FLAGS, *FLAGS, *stop, "--save-dir", tmp_path))
    resumed = per_update(
        run_cli("fairseq-train", sample_bin, *TRAIN_FLAGS, *FLAGS, "--max-epoch", "3", "--save-dir", tmp_path)
    )
    assert set(first) | set(resumed) == set(straight) and not set(first) & set(resumed)
    # epochs are ~62 updates; phases r, r, S (whenswitch 2 and the restart after epoch 1 both
    # toggle at epoch 2; the restart after epoch 2 toggles at 3): resumed runs cross a switch
    assert min(resumed) > 60
    for update, (loss, sg_loss) in resumed.items():
        assert loss == straight[update][0], update
        assert sg_loss == pytest.approx(straight[update][1], rel=1e-4), update


@pytest.mark.slow
def test_lstm_resumes_mid_epoch_with_its_h_and_c(sample_bin, tmp_path):
    """The carried (h, c) of an LSTM base model travel in the checkpoint too,
    and curves.csv of the resumed run holds the uninterrupted run's rows."""
    import csv

    flags = [*TRAIN_FLAGS, *FLAGS, "--rnn-type", "lstm", "--bptt", "70", "--max-epoch", "2"]
    straight = per_update(run_cli("fairseq-train", sample_bin, *flags, "--save-dir", tmp_path / "straight"))
    first = per_update(
        run_cli("fairseq-train", sample_bin, *flags, "--max-update", "20", "--save-dir", tmp_path / "resumed")
    )
    resumed = per_update(run_cli("fairseq-train", sample_bin, *flags, "--save-dir", tmp_path / "resumed"))
    assert min(resumed) == 21 and set(first) | set(resumed) == set(straight)
    for update, (loss, sg_loss) in resumed.items():
        assert loss == straight[update][0], update
        assert sg_loss == pytest.approx(straight[update][1], rel=1e-4), update

    def rows(run):
        with open(tmp_path / run / "curves.csv") as f:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]

    assert [r["epoch"] for r in rows("resumed")] == ["1", "2"]
    assert rows("resumed") == rows("straight")
