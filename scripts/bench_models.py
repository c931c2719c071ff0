"""Training and evaluation words/s on the CPU: qrnn_lm against fairseq's lstm_lm and transformer_lm.

    python scripts/bench_models.py [--data DIR] [--max-update 30] [--log-interval 5] [--rounds 2] [--quick]

Runs the real fairseq-train, back to back, for three models of about the
same parameter count on the same data (the bundled examples/sample_corpus,
binarized by scripts/preprocess.sh unless --data is given) with the same
batch of 20 x 70 tokens per update, Adam 1e-3 and the same seed:

  qrnn_lm         --task alternating_lm (this plugin), --bptt 70 --batch-size 20
  lstm_lm         --task language_modeling --sample-break-mode none --tokens-per-sample 70 --batch-size 20
  transformer_lm  the same task flags

Training words/s is fairseq's own ``wps`` of the train_inner lines, every
interval after the first (the first is warm-up). Then fairseq-eval-lm scores
--eval-subset with each model's last checkpoint (batch 20 x 70, no context
window) and its "Evaluated N tokens in S s (W tokens/s)" gives the
evaluation words/s. On a shared machine other processes' load swings these
by 2-5x from one interval to the next, so the models run in --rounds
interleaved rounds and the table gives the best interval (the least
disturbed) and the median. Prints each model's parameter count (fairseq's
"num. model params"), a table and the ratios. Each model keeps its own
default dropouts (qrnn_lm: the AWD ones, with AR/TAR).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.path.dirname(os.path.abspath(sys.executable))
USER_DIR = os.path.join(REPO, "altsg_fairseq")
SAMPLE = os.path.join(REPO, "examples", "sample_corpus")

LM_TASK = ["--task", "language_modeling", "--sample-break-mode", "none", "--tokens-per-sample", "70"]


def models(args):
    """{name: (model flags for fairseq-train, task flags for both tools)}."""
    e = str(args.embed_dim)
    return {
        "qrnn_lm": (
            ["--arch", "qrnn_lm", "--embed-dim", e, "--hidden-dim", str(args.qrnn_hidden), "--num-layers", "2",
             "--criterion", "synthetic_gradient_lm"],
            ["--user-dir", USER_DIR, "--task", "alternating_lm", "--bptt", "70"],
        ),
        "lstm_lm": (
            ["--arch", "lstm_lm", "--decoder-embed-dim", e, "--decoder-hidden-size", e, "--decoder-layers", "2",
             "--decoder-out-embed-dim", e, "--share-decoder-input-output-embed", "--criterion", "cross_entropy"],
            LM_TASK,
        ),
        "transformer_lm": (
            ["--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", e,
             "--decoder-input-dim", e, "--decoder-output-dim", e, "--decoder-ffn-embed-dim", str(args.transformer_ffn),
             "--decoder-attention-heads", "4",
             "--share-decoder-input-output-embed", "--criterion", "cross_entropy"],
            LM_TASK,
        ),
    }


def run(cmd, log_path, env=None):
    """Run a fairseq tool; returns its stdout + stderr (also written to log_path)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    with open(log_path, "w") as f:
        f.write(shlex.join(cmd) + "\n" + out)
    if proc.returncode != 0:
        sys.exit(f"bench_models.py: error: {os.path.basename(cmd[0])} failed ({proc.returncode}); "
                 f"log: {log_path}\n{out[-2000:]}")
    return out


def train(name, model_flags, task_flags, data, work, args, tag):
    """Train one model; returns (parameters, [wps per interval after the first], tokens/update, checkpoint)."""
    save = os.path.join(work, tag)
    shutil.rmtree(save, ignore_errors=True)  # a checkpoint_last.pt left there would resume, not train
    cmd = [os.path.join(BIN, "fairseq-train"), data, *task_flags, *model_flags, "--batch-size", "20",
           "--required-batch-size-multiple", "1", "--optimizer", "adam", "--lr", "1e-3", "--seed", str(args.seed),
           "--max-update", str(args.max_update), "--log-format", "json", "--log-interval", str(args.log_interval),
           "--disable-validation", "--save-dir", save, "--no-epoch-checkpoints", "--num-workers", "0",
           "--no-progress-bar", "--cpu"]
    print(f"== {tag}: {shlex.join(cmd[1:])}", flush=True)
    out = run(cmd, os.path.join(work, f"{tag}.train.log"))
    params = int(re.search(r"num\. (?:shared )?model params: ([0-9,]+)", out).group(1).replace(",", ""))
    inner = [json.loads(line[line.index("{"):]) for line in out.splitlines() if "| train_inner |" in line]
    if len(inner) < 2:
        sys.exit(f"bench_models.py: error: {name}: {len(inner)} train_inner lines; raise --max-update above "
                 f"2 x --log-interval")
    bsz = max(float(r["bsz"]) for r in inner)  # an interval may hold the epoch's short remainder batch
    if bsz != 20:
        sys.exit(f"bench_models.py: error: {name}: batches of {bsz:g} rows, expected 20")
    wpb = statistics.mean(float(r["wpb"]) for r in inner[1:])
    return params, [float(r["wps"]) for r in inner[1:]], wpb, os.path.join(save, "checkpoint_last.pt")


def evaluate(name, task_flags, data, checkpoint, work, args, tag):
    """fairseq-eval-lm words/s of one checkpoint on --eval-subset."""
    cmd = [os.path.join(BIN, "fairseq-eval-lm"), data, *task_flags, "--path", checkpoint,
           "--gen-subset", args.eval_subset, "--batch-size", "20", "--required-batch-size-multiple", "1",
           "--num-workers", "0", "--cpu"]
    # fairseq's own models keep an argparse.Namespace in their checkpoints, which torch's default
    # weights_only loader refuses; these are the checkpoints this script has just written
    env = {} if name == "qrnn_lm" else {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = run(cmd, os.path.join(work, f"{tag}.eval.log"), env)
    m = re.search(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)", out)
    ppl = re.search(r"Perplexity: ([0-9.]+)", out)
    return int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3)), float(ppl.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="binarized corpus (scripts/preprocess.sh output); default: binarize "
                                       "examples/sample_corpus into a temporary directory")
    parser.add_argument("--max-update", type=int, default=30, help="updates per model and round (default 30)")
    parser.add_argument("--log-interval", type=int, default=5, help="updates per wps reading; the first is warm-up "
                                                                    "(default 5)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds over the three models, interleaved (the second in reverse order; default 2)")
    parser.add_argument("--eval-subset", default="valid", help="split fairseq-eval-lm scores (default: valid)")
    parser.add_argument("--embed-dim", type=int, default=256, help="embedding size of all three (tied in and out)")
    parser.add_argument("--qrnn-hidden", type=int, default=448,
                        help="qrnn_lm hidden size of the first layer (2 layers; default 448 matches the "
                             "2 x 256 LSTM's parameter count)")
    parser.add_argument("--transformer-ffn", type=int, default=512, help="transformer_lm FFN size (2 layers, 4 heads)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=["qrnn_lm", "lstm_lm", "transformer_lm"], help="run only these")
    parser.add_argument("--keep", help="directory to keep logs and checkpoints in (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="smoke check: one round of 12 updates, wps every 4")
    args = parser.parse_args()
    if args.quick:
        args.max_update, args.log_interval, args.rounds = 12, 4, 1
    if args.max_update < 2 * args.log_interval:
        parser.error("--max-update must be at least 2 x --log-interval (the first interval is warm-up)")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    chosen = {name: flags for name, flags in models(args).items() if not args.only or name in args.only}
    results = {name: dict(wps=[], eval_wps=[], wpb=[]) for name in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        data = args.data
        if data is None:
            data = os.path.join(work, "data-bin")
            print(f"== binarizing {os.path.relpath(SAMPLE, REPO)} into {data}", flush=True)
            subprocess.run(["bash", os.path.join(REPO, "scripts", "preprocess.sh"), SAMPLE, data], check=True,
                           capture_output=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        import torch
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {args.rounds} "
              f"round(s) of {args.max_update} updates of 20 x 70 tokens per model, wps of every {args.log_interval} "
              f"updates after the first {args.log_interval}; logs in {work}", flush=True)
        for round_ in range(args.rounds):
            for name in (list(chosen) if round_ % 2 == 0 else list(chosen)[::-1]):
                model_flags, task_flags = chosen[name]
                start = time.time()
                tag = f"{name}.{round_ + 1}"
                params, wps, wpb, ckpt = train(name, model_flags, task_flags, data, work, args, tag)
                tokens, seconds, eval_wps, ppl = evaluate(name, task_flags, data, ckpt, work, args, tag)
                r = results[name]
                r["params"] = params
                r["wps"] += wps
                r["wpb"].append(wpb)
                r["eval_wps"].append(eval_wps)
                print(f"   round {round_ + 1}: {params:,} parameters; train words/s {', '.join(f'{w:.0f}' for w in wps)}; "
                      f"eval {eval_wps:,.0f} words/s ({tokens:,} tokens in {seconds:.1f} s); {time.time() - start:.0f} s",
                      flush=True)
    for r in results.values():
        r["best"], r["median"] = max(r["wps"]), statistics.median(r["wps"])
        r["eval_best"] = max(r["eval_wps"])
    print()
    print("Words/s: best (least disturbed) interval, and the median, of every round's intervals after the first.")
    print()
    print(f"| model | parameters | tokens/update | train words/s, best | train, median | "
          f"eval words/s ({args.eval_subset}), best | eval / train (best) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['params']:,} | {statistics.mean(r['wpb']):,.0f} | {r['best']:,.0f} | {r['median']:,.0f} "
              f"| {r['eval_best']:,.0f} | {r['eval_best'] / r['best']:.2f}x |")
    print()
    q = results.get("qrnn_lm")
    for other in ["lstm_lm", "transformer_lm"]:
        if q and other in results:
            o = results[other]
            print(f"qrnn_lm / {other}: training {q['best'] / o['best']:.2f}x (best), {q['median'] / o['median']:.2f}x "
                  f"(median); evaluation {q['eval_best'] / o['eval_best']:.2f}x")
    if q and "lstm_lm" in results:
        verdict = "met" if q["best"] >= 2 * results["lstm_lm"]["best"] else "NOT met"
        print(f"goal qrnn_lm >= 2x lstm_lm in training words/s (best): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
