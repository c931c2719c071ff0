#!/usr/bin/env bash
# The main job on the bundled sample corpus, from a clean clone:
# set up .venv, binarize, train a small QRNN language model on the CPU for a
# few epochs, and report perplexities. Takes a few minutes on 2 cores.
#   bash scripts/demo.sh [extra fairseq-train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-4}
if ! [[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]]; then
  echo "demo.sh: error: EPOCHS must be a whole number of epochs, 1 or more (got '$EPOCHS'; fairseq reads 0 as no limit)" >&2
  exit 2
fi
bash scripts/setup_env.sh
source .venv/bin/activate
export PYTHONWARNINGS=ignore
DATA=data-bin/sample
RUN=runs/demo
if [ ! -f "$DATA/test.bin" ]; then
  echo "== binarizing examples/sample_corpus into $DATA (log: $DATA.log)"
  mkdir -p "$(dirname "$DATA")"
  bash scripts/data/preprocess.sh examples/sample_corpus "$DATA" > "$DATA.log" 2>&1 \
    || { tail -n 3 "$DATA.log" >&2; exit 1; }
fi
rm -rf "$RUN"; mkdir -p "$RUN"
echo "== training qrnn_lm for $EPOCHS epochs (log: $RUN/train.log)"
fairseq-train "$DATA" --user-dir altsg_fairseq --task alternating_lm --arch qrnn_lm \
  --criterion synthetic_gradient_lm --optimizer adam --lr 2e-3 --clip-norm 0.25 \
  --batch-size 20 --batch-size-valid 10 --bptt 70 --seed 42 --max-epoch "$EPOCHS" \
  --save-dir "$RUN" --no-epoch-checkpoints --log-format simple --log-interval 20 --cpu "$@" \
  2>&1 | grep -v "tensorboardX" | tee "$RUN/train.log" | grep --line-buffered -E "train_inner|valid on|end of epoch|error"
echo "== scoring the best checkpoint on the test split (fairseq-eval-lm, batch 1)"
fairseq-eval-lm "$DATA" --user-dir altsg_fairseq --task alternating_lm --path "$RUN/checkpoint_best.pt" \
  --gen-subset test --batch-size 1 --bptt 70 --cpu 2>&1 | grep -v "tensorboardX" > "$RUN/eval.log"
types=$(grep -oE "dictionary: [0-9]+ types" "$RUN/train.log" | grep -oE "[0-9]+")
echo "== perplexity"
echo "untrained (uniform over the $types dictionary entries): $types"
awk -F'|' '/train_inner/ && !done {match($0, /ppl=[0-9.]+/); print "first 20 updates (train): " substr($0, RSTART + 4, RLENGTH - 4); done = 1}' "$RUN/train.log"
grep "valid on 'valid'" "$RUN/train.log" | sed -E 's/.*epoch ([0-9]+).* ppl ([0-9.]+).*/after epoch \1 (valid): \2/'
grep -oE "Perplexity: [0-9.]+" "$RUN/eval.log" | sed 's/Perplexity: /best checkpoint (test): /'
echo "== a sample from the best checkpoint (fairseq-interactive, temperature 0.8)"
echo "the city of" | fairseq-interactive "$DATA" --user-dir altsg_fairseq --task alternating_lm \
  --path "$RUN/checkpoint_best.pt" --cpu --sampling --temperature 0.8 --beam 1 --max-len-b 20 --seed 1 2>/dev/null \
  | grep "^H-" | cut -f3
