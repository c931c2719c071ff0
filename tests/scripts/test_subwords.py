"""Subwords end to end: sentencepiece -> binarize -> fairseq-train -> fairseq-eval-lm -> word-level perplexity."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from helpers import BIN, REPO, SAMPLE, TRAIN_FLAGS, run_cli

SPLITS = ("train", "valid", "test")


def script(name, *args, stdin=None):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "data" / name), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
    )


def lines_of(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


@pytest.fixture(scope="module")
def spm_data(tmp_path_factory):
    """The sample corpus as 1000 unigram pieces; binarized into the default sample-spm/bin."""
    root = tmp_path_factory.mktemp("subwords")
    proc = script("subword_data.py", SAMPLE, root / "data" / "sample-spm", "--vocab-size", "1000", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"-> {root / 'data' / 'sample-spm' / 'bin'}/" in proc.stdout  # it says where it wrote
    return root / "data" / "sample-spm", root / "data" / "sample-spm" / "bin", proc


def test_pieces_decode_back_to_the_words(spm_data):
    import sentencepiece as spm

    text, _, proc = spm_data
    assert "warning" not in proc.stderr
    sp = spm.SentencePieceProcessor(model_file=str(text / "spm.model"))
    for split in SPLITS:
        raw, pieces = lines_of(SAMPLE / f"{split}.txt"), lines_of(text / f"{split}.txt")
        assert len(pieces) == len(raw)  # one line of pieces per line of words, blank ones included
        assert [sp.decode(p.split()) for p in pieces] == [" ".join(r.split()) for r in raw]
        assert sum(len(p.split()) for p in pieces) > 1.5 * sum(len(r.split()) for r in raw)
    assert "<unk>" in lines_of(text / "test.txt")[3].split()  # the corpus's <unk> stays one piece


def test_binarized_subwords_are_pieces_plus_one_eos_per_line(spm_data):
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    text, bin_dir, proc = spm_data
    for split in SPLITS:
        pieces = lines_of(text / f"{split}.txt")
        data = MMapIndexedDataset(str(bin_dir / split))
        assert len(data) == len(pieces)
        assert int(data.sizes.sum()) == sum(len(p.split()) + 1 for p in pieces)
    assert f"{sum(len(p.split()) + 1 for p in pieces):>11,} subword tokens" in proc.stdout


@pytest.mark.slow  # the subword data tests stay in the default suite
def test_train_eval_and_word_level_perplexity(spm_data, tmp_path):
    text, bin_dir, _ = spm_data
    run_cli(
        "fairseq-train",
        bin_dir,
        *TRAIN_FLAGS,
        "--batch-size",
        "20",
        "--batch-size-valid",
        "10",
        "--bptt",
        "35",
        "--max-epoch",
        "1",
        "--max-update",
        "15",
        "--save-dir",
        tmp_path,
    )
    proc = run_cli(
        "fairseq-eval-lm",
        bin_dir,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        tmp_path / "checkpoint_last.pt",
        "--cpu",
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--bptt",
        "400",
    )
    log = proc.stdout + proc.stderr
    (tmp_path / "eval.log").write_text(log)

    # the numbers, independently of scripts/data/word_ppl.py
    n = int(re.search(r"Evaluated ([0-9,]+) tokens", log).group(1).replace(",", ""))
    bits = float(re.search(r"Loss \(base 2\): ([0-9.]+)", log).group(1))
    raw = lines_of(SAMPLE / "test.txt")
    words = sum(len(line.split()) for line in raw) + len(raw)  # words + one <eos> per line
    subwords = sum(len(p.split()) + 1 for p in lines_of(text / "test.txt"))
    assert n == subwords - 1  # batch 1 scores every token but the first
    expected = 2 ** (bits * n / words)

    out = script("word_ppl.py", tmp_path / "eval.log", SAMPLE / "test.txt", "--pieces", text / "test.txt", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert (r["subword_tokens_scored"], r["word_tokens"], r["subword_tokens_in_split"]) == (n, words, subwords)
    assert not r["estimated"]
    assert math.isclose(r["word_ppl"], expected, rel_tol=1e-12)
    assert r["word_ppl"] > r["subword_ppl"] > 1

    piped = script("word_ppl.py", "-", SAMPLE / "test.txt", stdin=log)  # from standard input, text report
    assert piped.returncode == 0, piped.stderr
    assert f"perplexity {expected:.2f}" in piped.stdout.splitlines()[-1]
    assert f"{words - len(raw):,} words + {len(raw):,} <eos>" in piped.stdout


LOG = "Evaluated 1,000 tokens in 1.0s (1000.00 tokens/s)\nLoss (base 2): 3.0000, Perplexity: 8.00\n"


def test_word_ppl_formula_and_partly_scored_split(tmp_path):
    (tmp_path / "raw.txt").write_text("a b c\n\nd e f g\n")  # 7 words + 3 <eos> = 10
    (tmp_path / "log").write_text(LOG)
    out = json.loads(script("word_ppl.py", tmp_path / "log", tmp_path / "raw.txt", "--json").stdout)
    assert out["word_tokens"] == 10 and out["word_loss_base2"] == 300.0
    # 2000 pieces + 3 eos, of which eval-lm scored 1000: words counted in proportion (an estimate)
    (tmp_path / "pieces.txt").write_text(" ".join(["x"] * 1000) + "\n\n" + " ".join(["y"] * 1000) + "\n")
    out = script("word_ppl.py", tmp_path / "log", tmp_path / "raw.txt", "--pieces", tmp_path / "pieces.txt")
    assert "(estimate)" in out.stdout and "--batch-size 1" in out.stdout
    r = json.loads(
        script(
            "word_ppl.py", tmp_path / "log", tmp_path / "raw.txt", "--pieces", tmp_path / "pieces.txt", "--json"
        ).stdout
    )
    assert r["estimated"] and math.isclose(r["word_tokens_scored"], 10 * 1000 / 2002)
    assert math.isclose(r["word_ppl"], 2 ** (3 * 1000 / (10 * 1000 / 2002)))


@pytest.mark.parametrize(
    "case,message",
    [
        ("no eval line", "no 'Evaluated N tokens' line in"),
        ("other split", "has 2 lines and"),
        ("missing raw", "cannot read the raw text"),
    ],
)
def test_word_ppl_mistakes_give_one_clear_line(case, message, tmp_path):
    (tmp_path / "raw.txt").write_text("a b c\n\nd e f g\n")
    (tmp_path / "pieces.txt").write_text("x y\nz\n")
    (tmp_path / "log").write_text("nothing here\n" if case == "no eval line" else LOG)
    args = [tmp_path / "log", tmp_path / ("gone.txt" if case == "missing raw" else "raw.txt")]
    if case == "other split":
        args += ["--pieces", tmp_path / "pieces.txt"]
    proc = script("word_ppl.py", *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("word_ppl.py: error:") and message in lines[0], proc.stderr


@pytest.mark.parametrize(
    "case,message",
    [
        ("vocabulary too big", "lower --vocab-size"),
        ("missing split", "test.txt is missing"),
    ],
)
def test_subword_data_mistakes_give_one_clear_line(case, message, tmp_path):
    src = tmp_path / "words"
    src.mkdir()
    for split in SPLITS:
        (src / f"{split}.txt").write_text("the cat sat on the mat\n" * 20)
    if case == "missing split":
        (src / "test.txt").unlink()
    proc = script(
        "subword_data.py", src, tmp_path / "pieces", "--vocab-size", "5000", "--threads", "1", "--no-binarize"
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subword_data.py: error:") and message in lines[0], proc.stderr
