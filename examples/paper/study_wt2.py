"""A CPU-scale study on WikiText-2: BPTT, DNI and alternating synthetic/real gradients with restarts.

    python examples/paper/study_wt2.py [--wikitext DIR] [--out runs/study_wt2] [--epochs 32] [--train-lines 4000] ...

Three runs of the same small qrnn_lm with the same epochs and seed, their
flags mirroring the seed's WikiText-2 runs as examples/paper/recipes.py expresses
them (wt2/bptt, wt2/dni, wt2/alt-restart5: the seed's QRNN 50 x 1
synthesizer; DNI and the alternating run both switch synthetic gradients on
at epoch 2 with --whenswitch 2, as the seed's WikiText-2 runs did; the
alternating run also toggles them, and restarts the lr, at every warm
restart of --restart-base B):

  bptt  no synthesizer, constant lr
  dni   --use-sg --whenswitch 2: synthetic gradients from epoch 2 on, constant lr
  alt   --use-sg --whenswitch 2 --mixture --lr-scheduler warm_restarts --restart-lr --restart-base B

The CPU-scale setting (printed at the start; written to OUT/setting.json):
the first --train-lines lines of WikiText-2's train.txt, the first
--valid-lines of valid.txt, the whole test.txt; a vocabulary of the
--vocab most frequent words of the train slice (fairseq-preprocess
--nwordssrc; the rest become <unk>, so perplexities are NOT comparable with
published WikiText-2 figures); a 2-layer qrnn_lm of --embed-dim /
--hidden-dim (--arch qrnn_lm with qrnn_lm_wt2's dropouts); everything else
is the recipe's command (batch 20, --optimizer adam_l2 1e-3, weight decay
1.2e-6, clip 0.25, AR 2, TAR 1, dropouts 0.4/0.2/0.1 and the model's
defaults, seed 42), with --bptt 70 instead of 200 and --epochs instead of
320.

Each run writes OUT/<run>/curves.csv (per-epoch losses, fairseq's --task
alternating_lm) and train.log; then fairseq-eval-lm scores its
checkpoint_best.pt on the test split (batch 1) into eval.log; then
examples/paper/plot_curves.py draws all three into OUT/curves.png, and a table
(final and best valid ppl, test ppl, seconds per epoch) is printed and
written to OUT/summary.md. A run whose directory already holds a
checkpoint_last.pt is continued by fairseq (a finished one is not rerun);
--fresh starts over. The corpus itself is never copied into the repository.
"""

import argparse
import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.dirname(os.path.abspath(sys.executable))
USER_DIR = os.path.join(REPO, "altsg_fairseq")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recipes  # noqa: E402  (the seed's runs as fairseq flags)

RUNS = {"bptt": "wt2/bptt", "dni": "wt2/dni", "alt": "wt2/alt-restart5"}
LABELS = {"bptt": "BPTT", "dni": "DNI (synthetic from epoch 2)", "alt": "alternating, restarts"}


def set_flag(cmd, flag, *values):
    """cmd with ``flag``'s values replaced by ``values`` (appended when absent)."""
    if flag not in cmd:
        return cmd + [flag, *values]
    i = j = cmd.index(flag) + 1
    while j < len(cmd) and not cmd[j].startswith("--"):
        j += 1
    return cmd[:i] + list(values) + cmd[j:]


def tool(name):
    return os.path.join(BIN, name)


def env():
    return dict(os.environ, PYTHONWARNINGS="ignore", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def slice_lines(src: str, dest: str, lines: int) -> int:
    """Copy the first ``lines`` lines (0: all) of src to dest; returns the tokens (words + one eos per line)."""
    tokens = 0
    with open(src, encoding="utf-8") as f, open(dest, "w", encoding="utf-8") as out:
        for n, line in enumerate(f):
            if lines and n >= lines:
                break
            out.write(line)
            tokens += len(line.split()) + 1
    return tokens


def binarize(args, data_bin: str) -> dict:
    """Slice the corpus and binarize it with a capped vocabulary; returns token counts and dictionary size."""
    text = os.path.join(args.out, "text")
    os.makedirs(text, exist_ok=True)
    counts = {}
    for split, lines in [("train", args.train_lines), ("valid", args.valid_lines), ("test", args.test_lines)]:
        src = os.path.join(args.wikitext, f"{split}.txt")
        if not os.path.isfile(src):
            sys.exit(f"study_wt2.py: error: {src} is missing; --wikitext must hold WikiText-2's train.txt, "
                     f"valid.txt and test.txt")
        counts[split] = slice_lines(src, os.path.join(text, f"{split}.txt"), lines)
    done = os.path.join(data_bin, "counts.json")
    if not os.path.isfile(done):
        shutil.rmtree(data_bin, ignore_errors=True)
        dict_dir = os.path.join(args.out, "dict")
        common = ["--only-source", "--log-format", "simple"]
        subprocess.run([tool("fairseq-preprocess"), *common, "--dict-only", "--trainpref", os.path.join(text, "train.txt"),
                        "--nwordssrc", str(args.vocab), "--destdir", dict_dir], check=True, env=env(), capture_output=True)
        subprocess.run([tool("fairseq-preprocess"), *common, "--srcdict", os.path.join(dict_dir, "dict.txt"),
                        "--workers", "2", "--trainpref", os.path.join(text, "train.txt"),
                        "--validpref", os.path.join(text, "valid.txt"), "--testpref", os.path.join(text, "test.txt"),
                        "--destdir", data_bin], check=True, env=env(), capture_output=True)
        with open(os.path.join(data_bin, "dict.txt")) as f:
            counts["dictionary"] = sum(1 for _ in f) + 4  # plus fairseq's four special symbols
        with open(done, "w") as f:
            json.dump(counts, f)
    with open(done) as f:
        return json.load(f)


def train_command(args, run, data_bin, save):
    """The recipe's fairseq-train command of ``run`` (examples/paper/recipes.py), at this study's scale."""
    cmd = recipes.commands(RUNS[run], data_bin, save)[0]
    cmd[0] = tool("fairseq-train")
    for flag, value in [("--arch", "qrnn_lm"), ("--bptt", args.bptt), ("--max-epoch", args.epochs),
                        ("--lr", args.lr), ("--seed", args.seed), ("--restart-base", args.restart_base)]:
        if flag != "--restart-base" or flag in cmd:
            cmd = set_flag(cmd, flag, str(value))
    return cmd + [
        # qrnn_lm_wt2's dropouts with the small model's sizes
        "--embed-dim", str(args.embed_dim), "--hidden-dim", str(args.hidden_dim), "--num-layers", str(args.layers),
        "--dropout-hidden", "0.2", "--no-epoch-checkpoints", "--cpu", "--log-format", "simple",
        "--log-interval", "50", "--no-progress-bar", "--num-workers", "0",
        *(["--max-update", str(args.max_update)] if args.max_update else []),
    ]


def eval_command(args, data_bin, save):
    return [tool("fairseq-eval-lm"), data_bin, "--user-dir", USER_DIR, "--task", "alternating_lm",
            "--path", os.path.join(save, "checkpoint_best.pt"), "--gen-subset", "test", "--batch-size", "1",
            "--bptt", str(args.bptt), "--cpu", "--num-workers", "0"]


def stream(cmd, log_path, tag, echo):
    """Run cmd, writing its output to log_path and echoing the lines that match ``echo``."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
        tail = []
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-30:]
            if re.search(echo, line):
                print(f"[{tag}] {line.rstrip()}", flush=True)
        if proc.wait() != 0:
            sys.exit(f"study_wt2.py: error: {os.path.basename(cmd[0])} failed for run {tag} ({proc.returncode}); "
                     f"log: {log_path}\n{''.join(tail)}")


def read_curves(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wikitext", default="/work/shared/data/wikitext-2",
                        help="directory of WikiText-2's train.txt, valid.txt, test.txt (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "study_wt2"),
                        help="output directory: data, runs, curves.png, summary.md (default: runs/study_wt2)")
    parser.add_argument("--epochs", type=int, default=32, help="epochs of every run (default: %(default)s)")
    parser.add_argument("--train-lines", type=int, default=4000,
                        help="first lines of train.txt to train on, 0: all (default: %(default)s, about 220k tokens)")
    parser.add_argument("--valid-lines", type=int, default=500,
                        help="first lines of valid.txt to validate on, 0: all (default: %(default)s, about 30k tokens)")
    parser.add_argument("--test-lines", type=int, default=0, help="first lines of test.txt to score, 0: all (default)")
    parser.add_argument("--vocab", type=int, default=10000,
                        help="dictionary size: the most frequent words of the train slice, the rest <unk> "
                             "(default: %(default)s)")
    parser.add_argument("--embed-dim", type=int, default=128, help="qrnn_lm embedding size (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=128, help="qrnn_lm hidden size (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=2, help="QRNN layers (default: %(default)s)")
    parser.add_argument("--bptt", type=int, default=70, help="base window length (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (the seed's, default: %(default)s)")
    parser.add_argument("--restart-base", type=int, default=4,
                        help="warm restarts of the alternating run after epochs B, 2B, 4B, ... "
                             "(default: %(default)s: restarts after 4, 8, 16, 32)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which runs (default: all)")
    parser.add_argument("--max-update", type=int, default=0, help="stop every run after this many updates (timing runs)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs in --out and start over")
    parser.add_argument("--dry-run", action="store_true", help="print the setting and the commands, run nothing")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    setting = {k: getattr(args, k) for k in ["train_lines", "valid_lines", "test_lines", "vocab", "embed_dim",
                                             "hidden_dim", "layers", "bptt", "lr", "restart_base", "seed", "epochs",
                                             "max_update"]}
    setting_path = os.path.join(args.out, "setting.json")
    if args.fresh and not args.dry_run:
        shutil.rmtree(args.out, ignore_errors=True)
    if os.path.isfile(setting_path) and not args.dry_run:
        with open(setting_path) as f:
            old = json.load(f)
        if {k: v for k, v in old.items() if k != "epochs"} != {k: v for k, v in setting.items() if k != "epochs"}:
            sys.exit(f"study_wt2.py: error: {args.out} holds runs of another setting ({setting_path}); "
                     f"pass --fresh to replace them or another --out")
    data_bin = os.path.join(args.out, "data-bin")
    print(f"== WikiText-2 from {args.wikitext}; output in {args.out}")
    print(f"   train: first {args.train_lines or 'all'} lines of train.txt; valid: first {args.valid_lines or 'all'} "
          f"lines of valid.txt; test: {'first ' + str(args.test_lines) + ' lines' if args.test_lines else 'all'} of test.txt")
    print(f"   vocabulary: the {args.vocab:,} most frequent words of the train slice (others <unk>)")
    print(f"   model: qrnn_lm {args.layers} layers, embed {args.embed_dim}, hidden {args.hidden_dim}; batch 20, "
          f"bptt {args.bptt}, lr {args.lr:g}, {args.epochs} epochs, seed {args.seed}; otherwise examples/paper/recipes.py's "
          f"wt2 commands")
    if args.dry_run:
        for run in args.runs:
            save = os.path.join(args.out, run)
            print(shlex.join(train_command(args, run, data_bin, save)))
            print(shlex.join(eval_command(args, data_bin, save)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    counts = binarize(args, data_bin)
    with open(setting_path, "w") as f:
        json.dump(setting, f, indent=1)
    print(f"   tokens (words + one <eos> per line): train {counts['train']:,}, valid {counts['valid']:,}, "
          f"test {counts['test']:,}; dictionary {counts['dictionary']:,} entries", flush=True)
    rows = []
    for run in args.runs:
        save = os.path.join(args.out, run)
        os.makedirs(save, exist_ok=True)
        train = train_command(args, run, data_bin, save)
        print(f"== {run}: {shlex.join(train[1:])}", flush=True)
        start = time.time()
        stream(train, os.path.join(save, "train.log"), run, r"valid on|error")
        print(f"[{run}] trained in {time.time() - start:.0f} s; scoring checkpoint_best.pt on test (batch 1)", flush=True)
        stream(eval_command(args, data_bin, save), os.path.join(save, "eval.log"), run, r"Perplexity|Evaluated|error")
        with open(os.path.join(save, "eval.log")) as f:
            test = float(re.findall(r"Perplexity: ([0-9.]+)", f.read())[-1])
        curves = read_curves(os.path.join(save, "curves.csv"))
        best = min(curves, key=lambda r: r["valid_ppl"])
        rows.append((run, len(curves), curves[-1]["valid_ppl"], best["valid_ppl"], int(best["epoch"]), test,
                     sum(r["seconds"] for r in curves) / len(curves)))
    png = os.path.join(args.out, "curves.png")
    title = (f"WikiText-2 slice ({counts['train'] // 1000}k train tokens, {counts['dictionary'] // 1000}k vocab), "
             f"qrnn_lm {args.layers}x{args.hidden_dim}")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot_curves.py"),
                    *[os.path.join(args.out, run) for run in args.runs], "-o", png, "--log-y", "--title", title,
                    "--labels", *[LABELS[run] for run in args.runs]], check=True)
    table = ["| run | epochs | final valid ppl | best valid ppl (epoch) | test ppl | s / epoch |",
             "|---|---|---|---|---|---|"]
    table += [f"| {run} | {n} | {final:.2f} | {best:.2f} ({epoch}) | {test:.2f} | {secs:.1f} |"
              for run, n, final, best, epoch, test, secs in rows]
    print("\n".join(table))
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(f"{title}\n\nsetting: {json.dumps(setting)}\n\n" + "\n".join(table) + "\n")
    print(f"wrote {png} and {os.path.join(args.out, 'summary.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
