"""Training and evaluation words/s on the CPU: qrnn_lm against fairseq's lstm_lm and transformer_lm.

    python benchmarks/bench_models.py [--size small|large|both] [--data DIR] [--max-update 30] [--log-interval 5]
                                   [--rounds 2] [--quick]

Runs the real fairseq-train, back to back, for three models of about the
same parameter count on the same data (the bundled examples/sample_corpus,
binarized by scripts/data/preprocess.sh unless --data is given) with the same
batch of 20 x 70 tokens per update, Adam 1e-3 and the same seed:

  qrnn_lm         --task alternating_lm (this plugin), --bptt 70 --batch-size 20
  lstm_lm         --task language_modeling --sample-break-mode none --tokens-per-sample 70 --batch-size 20
  transformer_lm  the same task flags

in one or both of two configurations (--size, default both), each with
embeddings of --embed-dim (256) tied to the output layer:

  small  2 layers: qrnn_lm hidden --qrnn-hidden (448), lstm_lm hidden 256,
         transformer_lm width 256 and FFN --transformer-ffn (512). The tied
         13.7k x 256 softmax dominates every model's step.
  large  3 layers, wide enough that the recurrent body, not the softmax,
         dominates: lstm_lm hidden --large-hidden (768, projected to 256 before
         the output layer), qrnn_lm hidden --large-qrnn-hidden (1712),
         transformer_lm width --large-hidden (projected from and to 256) and
         FFN --large-transformer-ffn (1152). With the sample corpus's 13,696-entry
         dictionary the defaults agree in parameter count within 0.3%.

Training words/s is fairseq's own ``wps`` of the train_inner lines, every
interval after the first (the first is warm-up). Then fairseq-eval-lm scores
--eval-subset with each model's last checkpoint (batch 20 x 70, no context
window) and its "Evaluated N tokens in S s (W tokens/s)" gives the
evaluation words/s. On a shared machine other processes' load swings these
by 2-5x from one interval to the next, so the models of a configuration run
in --rounds interleaved rounds and the table gives the best interval (the
least disturbed) and the median. Prints each model's parameter count
(fairseq's "num. model params"), a table and the ratios per configuration.
Each model keeps its own default dropouts (qrnn_lm: the AWD ones, with
AR/TAR).
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


def models(args, size):
    """{name: (model flags for fairseq-train, task flags for both tools)} of configuration ``size``."""
    e = str(args.embed_dim)
    qrnn_task = ["--user-dir", USER_DIR, "--task", "alternating_lm", "--bptt", "70"]
    if size == "small":
        layers, qrnn_hidden, lstm_hidden = "2", args.qrnn_hidden, e
        width, ffn, heads = e, args.transformer_ffn, "4"
    else:
        layers, qrnn_hidden, lstm_hidden = "3", args.large_qrnn_hidden, str(args.large_hidden)
        width, ffn, heads = str(args.large_hidden), args.large_transformer_ffn, str(max(1, args.large_hidden // 64))
    return {
        "qrnn_lm": (
            [
                "--arch",
                "qrnn_lm",
                "--embed-dim",
                e,
                "--hidden-dim",
                str(qrnn_hidden),
                "--num-layers",
                layers,
                "--criterion",
                "synthetic_gradient_lm",
            ],
            qrnn_task,
        ),
        "lstm_lm": (
            [
                "--arch",
                "lstm_lm",
                "--decoder-embed-dim",
                e,
                "--decoder-hidden-size",
                lstm_hidden,
                "--decoder-layers",
                layers,
                "--decoder-out-embed-dim",
                e,
                "--share-decoder-input-output-embed",
                "--criterion",
                "cross_entropy",
            ],
            LM_TASK,
        ),
        "transformer_lm": (
            [
                "--arch",
                "transformer_lm",
                "--decoder-layers",
                layers,
                "--decoder-embed-dim",
                width,
                "--decoder-input-dim",
                e,
                "--decoder-output-dim",
                e,
                "--decoder-ffn-embed-dim",
                str(ffn),
                "--decoder-attention-heads",
                heads,
                "--share-decoder-input-output-embed",
                "--criterion",
                "cross_entropy",
            ],
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
        sys.exit(
            f"bench_models.py: error: {os.path.basename(cmd[0])} failed ({proc.returncode}); "
            f"log: {log_path}\n{out[-2000:]}"
        )
    return out


def train(name, model_flags, task_flags, data, work, args, tag):
    """Train one model; returns (parameters, [wps per interval after the first], tokens/update, checkpoint)."""
    save = os.path.join(work, tag)
    shutil.rmtree(save, ignore_errors=True)  # a checkpoint_last.pt left there would resume, not train
    cmd = [
        os.path.join(BIN, "fairseq-train"),
        data,
        *task_flags,
        *model_flags,
        "--batch-size",
        "20",
        "--required-batch-size-multiple",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--seed",
        str(args.seed),
        "--max-update",
        str(args.max_update),
        "--log-format",
        "json",
        "--log-interval",
        str(args.log_interval),
        "--disable-validation",
        "--save-dir",
        save,
        "--no-epoch-checkpoints",
        "--num-workers",
        "0",
        "--no-progress-bar",
        "--cpu",
    ]
    print(f"== {tag}: {shlex.join(cmd[1:])}", flush=True)
    out = run(cmd, os.path.join(work, f"{tag}.train.log"))
    params = int(re.search(r"num\. (?:shared )?model params: ([0-9,]+)", out).group(1).replace(",", ""))
    inner = [json.loads(line[line.index("{") :]) for line in out.splitlines() if "| train_inner |" in line]
    if len(inner) < 2:
        sys.exit(
            f"bench_models.py: error: {name}: {len(inner)} train_inner lines; raise --max-update above "
            f"2 x --log-interval"
        )
    bsz = max(float(r["bsz"]) for r in inner)  # an interval may hold the epoch's short remainder batch
    if bsz != 20:
        sys.exit(f"bench_models.py: error: {name}: batches of {bsz:g} rows, expected 20")
    wpb = statistics.mean(float(r["wpb"]) for r in inner[1:])
    return params, [float(r["wps"]) for r in inner[1:]], wpb, os.path.join(save, "checkpoint_last.pt")


def evaluate(name, task_flags, data, checkpoint, work, args, tag):
    """fairseq-eval-lm words/s of one checkpoint on --eval-subset."""
    cmd = [
        os.path.join(BIN, "fairseq-eval-lm"),
        data,
        *task_flags,
        "--path",
        checkpoint,
        "--gen-subset",
        args.eval_subset,
        "--batch-size",
        "20",
        "--required-batch-size-multiple",
        "1",
        "--num-workers",
        "0",
        "--cpu",
    ]
    # fairseq's own models keep an argparse.Namespace in their checkpoints, which torch's default
    # weights_only loader refuses; these are the checkpoints this script has just written
    env = {} if name == "qrnn_lm" else {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = run(cmd, os.path.join(work, f"{tag}.eval.log"), env)
    m = re.search(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)", out)
    ppl = re.search(r"Perplexity: ([0-9.]+)", out)
    return int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3)), float(ppl.group(1))


def bench(chosen, data, work, args, prefix=""):
    """Train and evaluate the ``chosen`` models in --rounds interleaved rounds (the odd ones in reverse order).

    Returns {name: {"params", "wps" (every interval after the first, all rounds), "wpb", "eval_wps"}}; logs and
    checkpoints go to work/<prefix><name>.<round>*.
    """
    results = {name: dict(wps=[], eval_wps=[], wpb=[]) for name in chosen}
    for round_ in range(args.rounds):
        for name in list(chosen) if round_ % 2 == 0 else list(chosen)[::-1]:
            model_flags, task_flags = chosen[name]
            start = time.time()
            tag = f"{prefix}{name}.{round_ + 1}"
            params, wps, wpb, ckpt = train(name, model_flags, task_flags, data, work, args, tag)
            tokens, seconds, eval_wps, ppl = evaluate(name, task_flags, data, ckpt, work, args, tag)
            r = results[name]
            r["params"] = params
            r["wps"] += wps
            r["wpb"].append(wpb)
            r["eval_wps"].append(eval_wps)
            print(
                f"   round {round_ + 1}: {params:,} parameters; train words/s {', '.join(f'{w:.0f}' for w in wps)}; "
                f"eval {eval_wps:,.0f} words/s ({tokens:,} tokens in {seconds:.1f} s); {time.time() - start:.0f} s",
                flush=True,
            )
    return results


def report(results, args, title):
    """Print the table of one configuration's ``results`` (see bench), the ratios and the 2x verdict."""
    for r in results.values():
        r["best"], r["median"] = max(r["wps"]), statistics.median(r["wps"])
        r["eval_best"] = max(r["eval_wps"])
    print()
    print(title)
    print()
    print("Words/s: best (least disturbed) interval, and the median, of every round's intervals after the first.")
    print()
    print(
        f"| model | parameters | tokens/update | train words/s, best | train, median | "
        f"eval words/s ({args.eval_subset}), best | eval / train (best) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['params']:,} | {statistics.mean(r['wpb']):,.0f} | {r['best']:,.0f} | {r['median']:,.0f} "
            f"| {r['eval_best']:,.0f} | {r['eval_best'] / r['best']:.2f}x |"
        )
    print()
    params = [r["params"] for r in results.values()]
    if len(params) > 1:
        print(f"parameter counts: largest / smallest {max(params) / min(params):.4f}")
    q = results.get("qrnn_lm")
    for other in ["lstm_lm", "transformer_lm"]:
        if q and other in results:
            o = results[other]
            print(
                f"qrnn_lm / {other}: training {q['best'] / o['best']:.2f}x (best), {q['median'] / o['median']:.2f}x "
                f"(median); evaluation {q['eval_best'] / o['eval_best']:.2f}x"
            )
    if q and "lstm_lm" in results:
        verdict = "met" if q["best"] >= 2 * results["lstm_lm"]["best"] else "NOT met"
        print(f"goal qrnn_lm >= 2x lstm_lm in training words/s (best): {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        choices=["small", "large", "both"],
        default="both",
        help="configuration(s) to run: small (2 layers, softmax-dominated), large (3 wide layers, "
        "recurrence-dominated) or both, small first (default: both)",
    )
    parser.add_argument(
        "--data",
        help="binarized corpus (scripts/data/preprocess.sh output); default: binarize "
        "examples/sample_corpus into a temporary directory",
    )
    parser.add_argument("--max-update", type=int, default=30, help="updates per model and round (default 30)")
    parser.add_argument(
        "--log-interval", type=int, default=5, help="updates per wps reading; the first is warm-up (default 5)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds over the three models, interleaved (the second in reverse order; default 2)",
    )
    parser.add_argument("--eval-subset", default="valid", help="split fairseq-eval-lm scores (default: valid)")
    parser.add_argument(
        "--embed-dim", type=int, default=256, help="embedding size of all three (tied in and out), both configurations"
    )
    parser.add_argument(
        "--qrnn-hidden",
        type=int,
        default=448,
        help="small: qrnn_lm hidden size of the first layer (2 layers; default 448 matches the "
        "2 x 256 LSTM's parameter count)",
    )
    parser.add_argument(
        "--transformer-ffn", type=int, default=512, help="small: transformer_lm FFN size (2 layers, 4 heads)"
    )
    parser.add_argument(
        "--large-hidden",
        type=int,
        default=768,
        help="large: lstm_lm hidden size and transformer_lm width (3 layers; default 768)",
    )
    parser.add_argument(
        "--large-qrnn-hidden",
        type=int,
        default=1712,
        help="large: qrnn_lm hidden size of its first two layers (3 layers; default 1712 matches "
        "the 3 x 768 LSTM's parameter count)",
    )
    parser.add_argument(
        "--large-transformer-ffn",
        type=int,
        default=1152,
        help="large: transformer_lm FFN size (3 layers, one head per 64 of width; default 1152 "
        "matches the 3 x 768 LSTM's parameter count)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=["qrnn_lm", "lstm_lm", "transformer_lm"], help="run only these")
    parser.add_argument("--keep", help="directory to keep logs and checkpoints in (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="smoke check: one round of 12 updates, wps every 4")
    args = parser.parse_args()
    if args.quick:
        args.max_update, args.log_interval, args.rounds = 12, 4, 1
    if args.max_update < 2 * args.log_interval:
        parser.error("--max-update must be at least 2 x --log-interval (the first interval is warm-up)")
    sizes = ["small", "large"] if args.size == "both" else [args.size]
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        data = args.data
        if data is None:
            data = os.path.join(work, "data-bin")
            print(f"== binarizing {os.path.relpath(SAMPLE, REPO)} into {data}", flush=True)
            subprocess.run(
                ["bash", os.path.join(REPO, "scripts", "data", "preprocess.sh"), SAMPLE, data],
                check=True,
                capture_output=True,
                env=dict(os.environ, PYTHONWARNINGS="ignore"),
            )
        import torch

        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {args.rounds} "
            f"round(s) of {args.max_update} updates of 20 x 70 tokens per model, wps of every {args.log_interval} "
            f"updates after the first {args.log_interval}; logs in {work}",
            flush=True,
        )
        results = {}
        for size in sizes:
            print(f"== configuration {size}", flush=True)
            chosen = {name: flags for name, flags in models(args, size).items() if not args.only or name in args.only}
            results[size] = bench(chosen, data, work, args, "" if size == "small" else f"{size}.")
    for size in sizes:
        report(results[size], args, f"Configuration {size}:")
    return 0


if __name__ == "__main__":
    sys.exit(main())
