"""scripts/score_text.py: a text file's perplexity through fairseq's own scorers."""

import math
import re
import subprocess
import sys

import pytest

from helpers import REPO, SAMPLE, run_cli

SCRIPT = REPO / "scripts" / "score_text.py"


def score(*args, check=True):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args), "--cpu"], capture_output=True, text=True, cwd=REPO
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # score_text.py's runs are slow tests; eval-lm itself is in the default suite
def test_the_whole_file_equals_eval_lm_on_the_binarized_split(trained, sample_bin):
    """The sample corpus's test text, scored as one stream, against fairseq-eval-lm --batch-size 1 on the test split."""
    save, _ = trained
    out = score(SAMPLE / "test.txt", save / "checkpoint_last.pt").stdout
    eval_lm = run_cli(
        "fairseq-eval-lm",
        sample_bin,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        save / "checkpoint_last.pt",
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--cpu",
    )
    log = eval_lm.stdout + eval_lm.stderr
    expected = float(re.search(r"Perplexity: ([0-9.]+)", log).group(1))
    tokens = re.search(r"Evaluated ([0-9,]+) tokens", log).group(1)
    assert f"{tokens} tokens scored" in out
    assert float(re.search(r"perplexity ([0-9.]+)", out.splitlines()[-1]).group(1)) == pytest.approx(
        expected, abs=0.011
    )
    assert "0 outside the dictionary" in out.splitlines()[0]  # the dictionary was made from this text


@pytest.mark.slow  # the whole-file score stays in the default suite
def test_per_line_scores_are_the_hubs_and_each_line_alone(trained, sample_bin, tmp_path):
    save, _ = trained
    lines = ["the city of london", "in 1990 , the qzxv flarble won", ""]
    text = tmp_path / "mine.txt"
    text.write_text("\n".join(lines) + "\n")
    proc = score(text, save / "checkpoint_last.pt", "--per-line", "--data", sample_bin)
    out = proc.stdout.strip().splitlines()
    assert out[0].endswith("11 words, 3 outside the dictionary (scored as <unk>)")  # london, qzxv, flarble
    rows = [line.split("\t") for line in out[1:-1]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and [int(r[2]) for r in rows] == [5, 8, 1]  # words + </s>

    from fairseq.models import BaseFairseqModel  # noqa: F401  (fairseq's registries first)
    from altsg_fairseq.models.qrnn_lm import QRNNLanguageModel

    hub = QRNNLanguageModel.from_pretrained(
        str(save), "checkpoint_last.pt", str(sample_bin), user_dir=str(REPO / "altsg_fairseq")
    )
    for row, line in zip(rows, lines):
        bits = float(hub.score(line)["positional_scores"].sum()) / math.log(2)
        assert float(row[1]) == pytest.approx(bits, abs=1e-3)
    # a line scored alone equals eval-lm on a file of that line (state reset; the line's first word given </s>)
    one = tmp_path / "one"
    one.mkdir()
    (one / "test.txt").write_text("\n" + lines[0] + "\n")  # an empty line first: its </s> starts the stream
    run_cli(
        "fairseq-preprocess",
        "--only-source",
        "--srcdict",
        sample_bin / "dict.txt",
        "--testpref",
        one / "test.txt",
        "--destdir",
        one / "bin",
    )
    log = run_cli(
        "fairseq-eval-lm",
        one / "bin",
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        save / "checkpoint_last.pt",
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--cpu",
    )
    log = log.stdout + log.stderr
    bits_per_token = float(re.search(r"Loss \(base 2\): ([0-9.]+)", log).group(1))
    assert re.search(r"Evaluated 5 tokens", log)
    assert -float(rows[0][1]) / 5 == pytest.approx(bits_per_token, abs=1e-3)


@pytest.mark.slow  # the whole-file score stays in the default suite
def test_word_scores_and_mistakes(trained, sample_bin, tmp_path):
    import shutil

    save, _ = trained
    # a comma (fairseq's --testpref separator) and a colon (--path's) in the names; a form feed inside
    # the line: a space to fairseq, a line break to str.splitlines()
    (tmp_path / "run:1").mkdir()
    shutil.copy(save / "checkpoint_last.pt", tmp_path / "run:1" / "checkpoint_best.pt")
    text = tmp_path / "t,1.txt"
    text.write_text("the city\x0cof london\n")
    out = score(text, tmp_path / "run:1", "--word-scores", "--data", sample_bin).stdout.splitlines()
    words = [line.split("\t") for line in out if "\t" in line]
    assert [w for w, _ in words] == ["city", "of", "london (<unk>)", "</s>"]  # the first word has no history
    assert all(float(b) < 0 for _, b in words)
    bits_per_token = float(re.search(r"([0-9.]+) bits per token", out[-1]).group(1))  # the stream's total
    assert -sum(float(b) for _, b in words) / 4 == pytest.approx(bits_per_token, abs=1e-3)
    bad = score(tmp_path / "missing.txt", save, check=False)
    assert (
        bad.returncode == 2 and bad.stderr.strip() == f"score_text.py: error: {tmp_path / 'missing.txt'}: no such file"
    )
    bad = score(text, tmp_path / "nowhere.pt", check=False)
    assert bad.returncode == 2 and "no such checkpoint" in bad.stderr
    bad = score(text, save, "--per-line", "--word-scores", check=False)
    assert bad.returncode == 2 and "leave out --per-line" in bad.stderr
