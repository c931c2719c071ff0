"""The paper's published runs as fairseq commands: train, then score the test split.

    python examples/paper/recipes.py list
    python examples/paper/recipes.py ptb/alt-restart5 --data data-bin/ptb [--dry-run] [-- extra fairseq-train flags]

Names: {ptb,wt2}/{bptt,dni,dni-restart160,dni-restart5,alt-restart160,alt-restart5}:
the seed README's ten runs plus the two BPTT baselines (the same runs
without the synthesizer), with exactly the seed's settings (reference
section 8): QRNN 4 x 1550, emsize 400, QRNN synthesizer 50 x 1, sg dropout
0.1, batch 20, bptt 200, Adam 1e-3, weight decay 1.2e-6, seed 42, 320
epochs, wdrop 0.1, dropouti 0.4, dropouth 0.3 (PTB) / 0.2 (WT2), clip 0.2
(PTB) / 0.25 (WT2). As published, the WikiText-2 alternating runs pass
--whenswitch 2 and the PTB ones do not. After training, fairseq-eval-lm
scores checkpoint_best.pt on the test split with batch 1.
"""

import argparse
import os
import shlex
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
USER_DIR = os.path.join(REPO, "altsg_fairseq")

CORPORA = {
    "ptb": {"arch": "qrnn_lm_ptb", "clip": "0.2"},
    "wt2": {"arch": "qrnn_lm_wt2", "clip": "0.25"},
}
SG = ["--use-sg", "--sg-type", "qrnn", "--sg-hidden", "50", "--sg-layers", "1", "--sg-dropout", "0.1"]
RESTARTS = {"160": ["160", "320"], "5": ["5"]}


def run_flags(corpus: str, run: str):
    """The seed command of one run, as fairseq-train flags (without data and save dir)."""
    flags = []
    if run != "bptt":
        flags += SG
        kind, _, base = run.partition("-restart")
        if kind == "dni" or corpus == "wt2":
            flags += ["--whenswitch", "2"]
        if kind == "alt":
            flags += ["--mixture"]
        if base:
            flags += ["--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base", *RESTARTS[base]]
    return flags


RUNS = [f"{c}/{r}" for c in CORPORA for r in
        ["bptt", "dni", "dni-restart160", "dni-restart5", "alt-restart160", "alt-restart5"]]


def commands(name: str, data: str, save_dir: str, extra=()):
    corpus, run = name.split("/")
    c = CORPORA[corpus]
    train = [
        "fairseq-train", data, "--user-dir", USER_DIR, "--task", "alternating_lm", "--arch", c["arch"],
        "--criterion", "synthetic_gradient_lm", "--alpha", "2", "--beta", "1",
        "--optimizer", "adam_l2", "--lr", "1e-3", "--weight-decay", "1.2e-6", "--clip-norm", c["clip"],
        "--batch-size", "20", "--batch-size-valid", "10", "--bptt", "200", "--dropout-input", "0.4",
        "--weight-drop", "0.1", "--seed", "42", "--max-epoch", "320", "--save-dir", save_dir,
        *run_flags(corpus, run), *extra,
    ]
    evaluate = [
        "fairseq-eval-lm", data, "--user-dir", USER_DIR, "--task", "alternating_lm",
        "--path", os.path.join(save_dir, "checkpoint_best.pt"), "--gen-subset", "test", "--batch-size", "1",
        "--bptt", "200",
    ]
    return train, evaluate


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a run name, or 'list'")
    parser.add_argument("--data", help="binarized corpus (scripts/data/preprocess.sh output)")
    parser.add_argument("--save-dir", help="checkpoints (default: checkpoints/<corpus>-<run>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.name == "list":
        print("\n".join(RUNS))
        return 0
    if args.name not in RUNS:
        parser.error(f"unknown run {args.name!r}; one of: {', '.join(RUNS)}")
    if not args.data:
        parser.error("--data DIR is required (the fairseq-preprocess --destdir of the corpus)")
    save_dir = args.save_dir or os.path.join("checkpoints", args.name.replace("/", "-"))
    for cmd in commands(args.name, args.data, save_dir, extra):
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
