#!/usr/bin/env bash
# Binarize a directory of train.txt / valid.txt / test.txt (one sentence per
# line, space-separated tokens) for the alternating_lm task:
#   scripts/data/preprocess.sh TEXT_DIR DEST_DIR
# As in the original code, the vocabulary is every type seen in the three splits;
# fairseq-preprocess adds an end-of-sentence token to every line.
set -euo pipefail
text=${1:?usage: scripts/data/preprocess.sh TEXT_DIR DEST_DIR}
dest=${2:?usage: scripts/data/preprocess.sh TEXT_DIR DEST_DIR}
for split in train valid test; do
  [ -f "$text/$split.txt" ] || { echo "preprocess.sh: error: $text/$split.txt is missing" >&2; exit 2; }
done
# fairseq-preprocess reads UTF-8 only (it has no encoding option) and would fail
# on a temporary file; name the user's file and line instead. It binarizes an
# empty file (or one of blank lines) without a word, into a split that training
# and evaluation cannot use: refuse it here
python3 - "$text"/{train,valid,test}.txt <<'PY' || exit 2
import sys
for path in sys.argv[1:]:
    words, number = False, 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                sys.exit(f"preprocess.sh: error: {path} line {number:,} is not UTF-8 (byte 0x{line[e.start]:02x} at "
                         f"column {e.start + 1}): re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")
            words = words or bool(line.split())
    if not words:
        what = "is empty" if number == 0 else f"holds only blank lines ({number:,})"
        sys.exit(f"preprocess.sh: error: {path} {what}: every split needs text (train.txt, valid.txt and "
                 f"test.txt, one sentence per line); put text in it")
PY
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$text"/{train,valid,test}.txt > "$tmp/all.txt"
fairseq-preprocess --only-source --dict-only --trainpref "$tmp/all.txt" --destdir "$tmp/dict" --log-format simple
fairseq-preprocess --only-source --srcdict "$tmp/dict/dict.txt" --workers 2 --log-format simple \
  --trainpref "$text/train.txt" --validpref "$text/valid.txt" --testpref "$text/test.txt" --destdir "$dest"
