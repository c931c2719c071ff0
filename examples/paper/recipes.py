"""The paper's published runs, and the AWD-QRNN baseline, as fairseq commands: train, then score the test split.

    python examples/paper/recipes.py list
    python examples/paper/recipes.py ptb/alt-restart5 --data data-bin/ptb [--dry-run] [-- extra fairseq-train flags]

Names: {ptb,wt2}/{bptt,dni,dni-restart160,dni-restart5,alt-restart160,alt-restart5}:
the ten runs of alternate_sg's README plus the two BPTT baselines (the
same runs without the synthesizer), with exactly the original code's
settings (docs/method.md#published-configurations): QRNN 4 x 1550,
emsize 400, QRNN synthesizer 50 x 1, sg dropout 0.1, batch 20, bptt 200,
Adam 1e-3, weight decay 1.2e-6, seed 42, 320 epochs, wdrop 0.1, dropouti
0.4, dropouth 0.3 (PTB) / 0.2 (WT2), clip 0.2 (PTB) / 0.25 (WT2). As
published, the WikiText-2 alternating runs pass --whenswitch 2 and the
PTB ones do not. After training, fairseq-eval-lm scores
checkpoint_best.pt on the test split with batch 1.

{ptb,wt2}/awd-qrnn: the baseline the paper compares with, awd-lstm-lm's
QRNN as its README trains it (main.py, then finetune.py): SGD at lr 30
switching to averaged SGD when validation stops improving (--optimizer
nt_asgd, --nonmono 5), weight decay 1.2e-6, bptt 70, validation batch 10,
dropout 0.4, dropoute 0.1, wdrop 0.1, dropouti 0.4, AR 2, TAR 1, 4 x 1550,
emsize 400; PTB: batch 20, clip 0.2, dropouth 0.3, seed 9001, 550 epochs,
then finetuning with seed 404 for 300 epochs; WikiText-2: batch 40, clip
0.25, dropouth 0.2, seed 4002, 500 epochs, finetuning alike. The
finetuning continues checkpoint_best.pt with averaged SGD from its first
update (--average-from-start) into <save-dir>-finetune and stops after 5
validations without improvement (fairseq's --patience 5; finetune.py stops at
the first validation worse than the best of all but the last --nonmono); the
test split is then scored with the finetuned checkpoint_best.pt.
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
    """The original code's command of one run, as fairseq-train flags (without data and save dir)."""
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


AWD_QRNN = {  # awd-lstm-lm README's QRNN runs (main.py defaults: lr 30, bptt 70, nonmono 5, wdecay 1.2e-6)
    "ptb": {
        "batch": "20",
        "clip": "0.2",
        "seed": "9001",
        "epochs": "550",
        "finetune_seed": "404",
        "finetune_epochs": "300",
    },
    "wt2": {
        "batch": "40",
        "clip": "0.25",
        "seed": "4002",
        "epochs": "500",
        "finetune_seed": "4002",
        "finetune_epochs": "500",
    },
}

RUNS = [
    f"{c}/{r}"
    for c in CORPORA
    for r in ["bptt", "dni", "dni-restart160", "dni-restart5", "alt-restart160", "alt-restart5", "awd-qrnn"]
]


def evaluation(data: str, save_dir: str, bptt: str):
    return [
        "fairseq-eval-lm",
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "alternating_lm",
        "--path",
        os.path.join(save_dir, "checkpoint_best.pt"),
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--bptt",
        bptt,
    ]


def awd_qrnn_commands(corpus: str, data: str, save_dir: str, extra=()):
    """Train with NT-ASGD, finetune with averaged SGD from the start, score the test split."""
    a = AWD_QRNN[corpus]
    common = [
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "alternating_lm",
        "--arch",
        CORPORA[corpus]["arch"],
        "--criterion",
        "synthetic_gradient_lm",
        "--alpha",
        "2",
        "--beta",
        "1",
        "--optimizer",
        "nt_asgd",
        "--lr",
        "30",
        "--weight-decay",
        "1.2e-6",
        "--nonmono",
        "5",
        "--clip-norm",
        a["clip"],
        "--batch-size",
        a["batch"],
        "--batch-size-valid",
        "10",
        "--bptt",
        "70",
        "--dropout",
        "0.4",
        "--dropout-embed",
        "0.1",
        "--dropout-input",
        "0.4",
        "--weight-drop",
        "0.1",
    ]
    finetuned = save_dir.rstrip("/") + "-finetune"
    train = ["fairseq-train", *common, "--seed", a["seed"], "--max-epoch", a["epochs"], "--save-dir", save_dir, *extra]
    finetune = [
        "fairseq-train",
        *common,
        "--average-from-start",
        "--seed",
        a["finetune_seed"],
        "--max-epoch",
        a["finetune_epochs"],
        "--patience",
        "5",
        "--finetune-from-model",
        os.path.join(save_dir, "checkpoint_best.pt"),
        "--save-dir",
        finetuned,
        *extra,
    ]
    return [train, finetune, evaluation(data, finetuned, "70")]


def commands(name: str, data: str, save_dir: str, extra=()):
    """The commands of a run: train (, finetune), then score the test split."""
    corpus, run = name.split("/")
    if run == "awd-qrnn":
        return awd_qrnn_commands(corpus, data, save_dir, extra)
    c = CORPORA[corpus]
    train = [
        "fairseq-train",
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "alternating_lm",
        "--arch",
        c["arch"],
        "--criterion",
        "synthetic_gradient_lm",
        "--alpha",
        "2",
        "--beta",
        "1",
        "--optimizer",
        "adam_l2",
        "--lr",
        "1e-3",
        "--weight-decay",
        "1.2e-6",
        "--clip-norm",
        c["clip"],
        "--batch-size",
        "20",
        "--batch-size-valid",
        "10",
        "--bptt",
        "200",
        "--dropout-input",
        "0.4",
        "--weight-drop",
        "0.1",
        "--seed",
        "42",
        "--max-epoch",
        "320",
        "--save-dir",
        save_dir,
        *run_flags(corpus, run),
        *extra,
    ]
    return [train, evaluation(data, save_dir, "200")]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
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
