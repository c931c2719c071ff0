"""Decisions every worker agrees on: a run that diverges, a checkpoint that cannot be read, a usage
error found on one worker: every worker stops, with one line each and a non-zero status, none
hangs (each run is bounded) and none prints a Python traceback. And a finished run's command,
run again, does nothing."""

import hashlib

import pytest

from helpers import TINY, TRAIN_FLAGS, records, run_cli, run_workers

FLAGS = [
    *TRAIN_FLAGS,
    *TINY,
    "--batch-size",
    "5",
    "--use-sg",
    "--whenswitch",
    "1",
    "--disable-validation",
    "--no-epoch-checkpoints",
]
TIMEOUT = 180


def last_lines(outs):
    """Each worker's last line; asserts that each stopped (non-zero) without a Python traceback."""
    lines = []
    for code, out in outs:
        assert code not in (0, None), out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        lines.append(out.strip().splitlines()[-1])
    return lines


def test_a_diverging_run_stops_every_worker_with_the_same_line(sample_bin, tmp_path):
    """The decision is taken on the losses summed over the workers (the one a single worker holding
    all rows takes), so every worker reaches it at the same update."""
    outs = run_workers(
        2, sample_bin, *FLAGS, "--lr", "1e4", "--clip-norm", "0", "--max-update", "30", "--save-dir", tmp_path,
        check=False, timeout=TIMEOUT,
    )  # fmt: skip
    lines = last_lines(outs)
    assert lines[0] == lines[1] and lines[0].startswith("altsg_fairseq: error: training diverged at update ")


@pytest.mark.slow
def test_an_unreadable_checkpoint_stops_every_worker_with_the_same_line(sample_bin, tmp_path):
    run_workers(2, sample_bin, *FLAGS, "--max-update", "3", "--save-dir", tmp_path, timeout=TIMEOUT)
    checkpoint = tmp_path / "checkpoint_last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:20000])  # cut short, as by a kill during a copy
    outs = run_workers(2, sample_bin, *FLAGS, "--max-update", "6", "--save-dir", tmp_path, check=False, timeout=TIMEOUT)
    lines = last_lines(outs)
    assert lines[0] == lines[1] and lines[0].startswith(f"altsg_fairseq: error: cannot read checkpoint {checkpoint}")


@pytest.mark.slow
def test_a_usage_error_found_by_one_worker_stops_the_others_in_one_line(sample_bin, tmp_path):
    """fairseq checks --save-dir on the first worker only: the others learn of its stop from their
    closed connections, and say so."""
    (tmp_path / "a-file").write_text("")
    outs = run_workers(
        2, sample_bin, *FLAGS, "--max-update", "3", "--save-dir", tmp_path / "a-file" / "run",
        check=False, timeout=TIMEOUT,
    )  # fmt: skip
    lines = last_lines(outs)
    assert lines[0].startswith("altsg_fairseq: error: cannot write checkpoints to --save-dir")
    assert (
        lines[1]
        == "altsg_fairseq: error: worker 1 stops: another worker of the run stopped first (its own line says why)"
    )


@pytest.mark.parametrize(
    "limit",
    [["--max-update", "4"], pytest.param(["--max-epoch", "1"], marks=pytest.mark.slow)],
    ids=["max-update", "max-epoch"],
)
def test_a_finished_run_run_again_does_nothing_and_a_raised_limit_continues(sample_bin, tmp_path, limit):
    short = ["--train-subset", "valid", "--valid-subset", "test", "--batch-size", "20"]  # 1 epoch: ~30 updates
    run_cli("fairseq-train", sample_bin, *FLAGS, *short, *limit, "--save-dir", tmp_path)
    checkpoint = tmp_path / "checkpoint_last.pt"
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    again = run_cli("fairseq-train", sample_bin, *FLAGS, *short, *limit, "--save-dir", tmp_path)
    assert f"the run in {tmp_path} is complete" in again.stderr + again.stdout
    assert not records(again.stderr + again.stdout, "train_inner")
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    raised = [limit[0], str(int(limit[1]) + 1)]
    more = run_cli("fairseq-train", sample_bin, *FLAGS, *short, *raised, "--save-dir", tmp_path)
    assert records(more.stderr + more.stdout, "train_inner")
