"""The neural cache pointer as an option of fairseq-eval-lm (docs/method.md#evaluation-and-outputs)."""

import re

import pytest

from helpers import REPO, SAMPLE, eval_lm_scores, run_cli


def perplexity(data, checkpoint, *flags):
    proc = run_cli(
        "fairseq-eval-lm",
        data,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        checkpoint,
        "--cpu",
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--bptt",
        "35",
        *flags,
    )
    out = proc.stdout + proc.stderr
    return eval_lm_scores(out)[0], out


@pytest.fixture(scope="module")
def repeated(sample_bin, tmp_path_factory):
    """A test split that repeats a few sample-corpus sentences: after their first
    occurrence the cache has seen every next word, in the same contexts."""
    text = tmp_path_factory.mktemp("repeated-text")
    lines = [line for line in (SAMPLE / "test.txt").read_text().splitlines() if line.strip()][:3]
    (text / "test.txt").write_text("\n".join(lines * 8) + "\n")
    data = tmp_path_factory.mktemp("repeated-bin")
    run_cli(
        "fairseq-preprocess",
        "--only-source",
        "--srcdict",
        sample_bin / "dict.txt",
        "--testpref",
        text / "test.txt",
        "--destdir",
        data,
    )
    return data


@pytest.mark.slow  # 15-25 s
def test_the_cache_lowers_perplexity_on_repeated_text(trained, repeated):
    checkpoint = trained[0] / "checkpoint_last.pt"
    plain, _ = perplexity(repeated, checkpoint)
    original_style, log = perplexity(
        repeated, checkpoint, "--cache-window", "60"
    )  # the original code's theta and lambda
    assert "cache pointer on: window 60, theta 0.6625, lambda 0.1279, mixed in once it holds a full window" in log
    mixed, scored = (
        int(n.replace(",", ""))
        for n in re.search(r"cache pointer was mixed into ([0-9,]+) of the ([0-9,]+) targets", log).groups()
    )
    assert mixed == scored - 61  # positions 61, 62, ... of the one row have a full window of 60 behind them
    early, _ = perplexity(repeated, checkpoint, "--cache-window", "60", "--cache-early")
    sharp, _ = perplexity(
        repeated, checkpoint, "--cache-window", "500", "--cache-early", "--cache-theta", "1.0", "--cache-lambda", "0.5"
    )
    assert original_style < plain and early < original_style  # mixing from the second word gains more here
    assert sharp < early
    off, _ = perplexity(repeated, checkpoint, "--cache-window", "60", "--cache-lambda", "0")
    assert off == pytest.approx(plain, abs=1e-4)


def test_cache_flags_are_checked(trained, repeated):
    proc = run_cli(
        "fairseq-eval-lm",
        repeated,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        trained[0] / "checkpoint_last.pt",
        "--cpu",
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--cache-window",
        "10",
        "--cache-lambda",
        "1.5",
        check=False,
    )
    assert proc.returncode == 1
    assert (
        "altsg_fairseq: error: --cache-window and --cache-theta must be >= 0 and --cache-lambda in [0, 1]"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_a_cache_that_never_fills_says_so(trained, repeated):
    """A window longer than the rows: the cache mixes into nothing (the perplexity is the plain one), and says why."""
    checkpoint = trained[0] / "checkpoint_last.pt"
    _, log = perplexity(repeated, checkpoint, "--cache-window", "3785")
    warning = next(line for line in log.splitlines() if "was mixed into none" in line)
    assert "its window 3,785 is never full" in warning and "--cache-early" in warning
