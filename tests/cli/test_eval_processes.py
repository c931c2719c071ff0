"""fairseq-eval-lm on several processes scores the whole split, as one process does (fairseq
prints one process's shard as the split's); --num-shards alone says it scores one shard, and
with several processes is refused in one line."""

import os
import re
import subprocess

import pytest

from helpers import BIN, PLUGIN, REPO, eval_lm_scores, free_port, run_cli

EVAL = ["--gen-subset", "valid", "--cpu"]
TIMEOUT = 240


def output(proc) -> str:
    """What a CLI printed (fairseq logs to stdout or stderr, as its logging was set up)."""
    return proc.stdout + proc.stderr


def evaluated(log: str) -> int:
    """The tokens fairseq-eval-lm says it scored (on its process)."""
    return int(re.search(r"Evaluated ([0-9,]+) tokens", log).group(1).replace(",", ""))


def torchrun_eval_lm(data, checkpoint, *flags, processes=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    return subprocess.run(
        [*command, str(BIN / "fairseq-eval-lm"), str(data), *map(str, PLUGIN), "--path", str(checkpoint), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_two_processes_score_the_whole_split_as_one_does(sample_bin, trained):
    """2 processes x 2 rows == 1 process x 4 rows (the same rows: each process scores its block of
    them): every token, and the perplexity to 1e-5 relative (fairseq sums the scores in float32,
    so another grouping of the same scores moves its last digits); one shard alone is not that."""
    checkpoint = trained[0] / "checkpoint_last.pt"
    whole = output(run_cli("fairseq-eval-lm", sample_bin, *PLUGIN, "--path", checkpoint, *EVAL, "--batch-size", 4))
    one, tokens = eval_lm_scores(whole), evaluated(whole)
    alone = run_cli(
        "fairseq-eval-lm", sample_bin, *PLUGIN, "--path", checkpoint, *EVAL, "--batch-size", 2, "--num-shards", 2,
        "--shard-id", 1,
    )  # fmt: skip
    assert "--num-shards 2 --shard-id 1: the figures below are of shard 1 of 2" in output(alone)
    shard = eval_lm_scores(output(alone))
    proc = torchrun_eval_lm(sample_bin, checkpoint, *EVAL, "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = eval_lm_scores(proc.stdout + proc.stderr)
    assert f"2 processes scored {tokens:,} tokens" in proc.stdout + proc.stderr
    assert evaluated(output(alone)) < 0.6 * tokens
    assert two[1] == pytest.approx(one[1], rel=1e-5) and abs(two[0] - one[0]) <= 1e-4
    assert abs(shard[1] - one[1]) > 2 * 1e-5 * one[1]  # the check above tells one shard from the split


@pytest.mark.slow
def test_num_shards_with_several_processes_is_one_line(sample_bin, trained):
    proc = torchrun_eval_lm(
        sample_bin, trained[0] / "checkpoint_last.pt", *EVAL, "--batch-size", "2", "--num-shards", "2"
    )
    assert proc.returncode != 0
    assert "altsg_fairseq: error: --num-shards 2 with 2 processes" in proc.stderr
