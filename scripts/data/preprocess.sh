#!/usr/bin/env bash
# Binarize a directory of train.txt / valid.txt / test.txt (one sentence per
# line, space-separated tokens) for the alternating_lm task:
#   scripts/data/preprocess.sh TEXT_DIR DEST_DIR
# As in the reference, the vocabulary is every type seen in the three splits;
# fairseq-preprocess adds an end-of-sentence token to every line.
set -euo pipefail
text=${1:?usage: scripts/data/preprocess.sh TEXT_DIR DEST_DIR}
dest=${2:?usage: scripts/data/preprocess.sh TEXT_DIR DEST_DIR}
for split in train valid test; do
  [ -f "$text/$split.txt" ] || { echo "preprocess.sh: error: $text/$split.txt is missing" >&2; exit 2; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$text"/{train,valid,test}.txt > "$tmp/all.txt"
fairseq-preprocess --only-source --dict-only --trainpref "$tmp/all.txt" --destdir "$tmp/dict" --log-format simple
fairseq-preprocess --only-source --srcdict "$tmp/dict/dict.txt" --workers 2 --log-format simple \
  --trainpref "$text/train.txt" --validpref "$text/valid.txt" --testpref "$text/test.txt" --destdir "$dest"
