"""A study of configurations x seeds on a corpus: mean and spread of best valid and test perplexity.

    python examples/paper/study.py [--corpus wt2-slice|sample|DIR] [--configs ...] [--seeds 1 2 3] [--jobs 2]
                                   [--out runs/study] [--epochs 32] [--dry-run]

Configurations (the published WikiText-2 flags, examples/paper/recipes.py, at
the study's scale; synthetic gradients from epoch 2 on as in the published
WikiText-2 runs; restarts after --restart-base B, 2B, 4B, ...):

  bptt           no synthesizer, constant lr                           (wt2/bptt)
  bptt-restarts  no synthesizer, cosine lr with warm restarts          the control: restarts without DNI
  dni            --use-sg --whenswitch 2, constant lr                  (wt2/dni)
  dni-restarts   --use-sg --whenswitch 2, cosine lr with warm restarts (wt2/dni-restart5)
  alt-restarts   dni-restarts, synthetic gradients toggled at restarts (wt2/alt-restart5)

Corpora: ``wt2-slice`` (default): the first --train-lines lines of
WikiText-2's train.txt (about 220k tokens), the first --valid-lines of its
valid.txt, all of test.txt (--wikitext: the folder), with the --vocab most
frequent words of the train slice (the rest <unk>: perplexities are not
comparable with published WikiText-2 figures); ``sample``: the bundled sample
corpus; or a folder of train.txt / valid.txt / test.txt. The model:
qrnn_lm --layers x --hidden-dim, embeddings --embed-dim, qrnn_lm_wt2's
dropouts, batch 20, --bptt 70, adam_l2 --lr 1e-3, --epochs; everything else
the recipe's.

Every run (OUT/<config>/seed<N>) trains with fairseq-train, one thread per
process, --jobs runs at a time (one per core), then fairseq-eval-lm scores
its checkpoint_best.pt on the test split (batch 1). A finished run (its
eval.log holds a perplexity) is not rerun; an interrupted one continues from
its checkpoint_last.pt: run the same command again to resume a study. Then
OUT/summary.md gets the table (per configuration: runs, best valid ppl and
test ppl as mean +- standard deviation over the seeds, minutes per run) and
OUT/curves.png the mean validation and training perplexity per epoch of
each configuration (examples/paper/plot_curves.py, from OUT/<config>/mean.csv).
"""

import argparse
import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.dirname(os.path.abspath(sys.executable))
sys.path.insert(0, HERE)
import recipes  # noqa: E402  (the published runs as fairseq flags)

CONFIGS = {
    "bptt": ("wt2/bptt", False, "BPTT"),
    "bptt-restarts": ("wt2/bptt", True, "BPTT, restarts"),
    "dni": ("wt2/dni", False, "DNI"),
    "dni-restarts": ("wt2/dni-restart5", False, "DNI, restarts"),
    "alt-restarts": ("wt2/alt-restart5", False, "alternating, restarts"),
}  # name: (recipe, add the recipe's warm restarts, label)
RESTARTS = ["--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base"]
CURVE_COLUMNS = ["valid_ppl", "train_ppl", "sg_cos", "sg_norm_ratio"]


def set_flag(cmd, flag, *values):
    """cmd with ``flag``'s values replaced by ``values`` (appended when absent)."""
    if flag not in cmd:
        return cmd + [flag, *values]
    i = j = cmd.index(flag) + 1
    while j < len(cmd) and not cmd[j].startswith("--"):
        j += 1
    return cmd[:i] + list(values) + cmd[j:]


def env():
    return dict(
        os.environ,
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )


def prepare_corpus(args) -> str:
    """The text folder of the study's corpus (sliced for wt2-slice) under OUT/text."""
    if args.corpus == "sample":
        return os.path.join(REPO, "examples", "sample_corpus")
    if args.corpus != "wt2-slice":
        return args.corpus
    text = os.path.join(args.out, "text")
    os.makedirs(text, exist_ok=True)
    for split, lines in [("train", args.train_lines), ("valid", args.valid_lines), ("test", 0)]:
        src = os.path.join(args.wikitext, f"{split}.txt")
        if not os.path.isfile(src):
            sys.exit(
                f"study.py: error: {src} is missing; --wikitext must hold WikiText-2's train.txt, valid.txt, test.txt"
            )
        with open(src, encoding="utf-8") as f, open(os.path.join(text, f"{split}.txt"), "w", encoding="utf-8") as out:
            for n, line in enumerate(f):
                if lines and n >= lines:
                    break
                out.write(line)
    return text


def binarize(args, text: str) -> dict:
    """Binarize with the --vocab most frequent words of train.txt; returns token counts and dictionary size."""
    data_bin = os.path.join(args.out, "data-bin")
    done = os.path.join(data_bin, "counts.json")
    if not os.path.isfile(done):
        shutil.rmtree(data_bin, ignore_errors=True)
        common = [os.path.join(BIN, "fairseq-preprocess"), "--only-source", "--log-format", "simple"]
        subprocess.run(
            [
                *common,
                "--dict-only",
                "--trainpref",
                os.path.join(text, "train.txt"),
                "--nwordssrc",
                str(args.vocab),
                "--destdir",
                os.path.join(args.out, "dict"),
            ],
            check=True,
            env=env(),
            capture_output=True,
        )
        subprocess.run(
            [
                *common,
                "--srcdict",
                os.path.join(args.out, "dict", "dict.txt"),
                "--workers",
                "2",
                *[
                    x
                    for split in ("train", "valid", "test")
                    for x in (f"--{split}pref", os.path.join(text, f"{split}.txt"))
                ],
                "--destdir",
                data_bin,
            ],
            check=True,
            env=env(),
            capture_output=True,
        )
        counts = {
            split: sum(len(line.split()) + 1 for line in open(os.path.join(text, f"{split}.txt"), encoding="utf-8"))
            for split in ("train", "valid", "test")
        }
        with open(os.path.join(data_bin, "dict.txt")) as f:
            counts["dictionary"] = sum(1 for _ in f) + 4  # plus fairseq's four special symbols
        with open(done, "w") as f:
            json.dump(counts, f)
    with open(done) as f:
        return json.load(f)


def train_command(args, config, seed, data_bin, save):
    recipe, add_restarts, _ = CONFIGS[config]
    cmd = recipes.commands(recipe, data_bin, save)[0]
    cmd[0] = os.path.join(BIN, "fairseq-train")
    for flag, value in [
        ("--arch", "qrnn_lm"),
        ("--bptt", args.bptt),
        ("--max-epoch", args.epochs),
        ("--lr", args.lr),
        ("--seed", seed),
    ]:
        cmd = set_flag(cmd, flag, str(value))
    if "--restart-base" in cmd:
        cmd = set_flag(cmd, "--restart-base", str(args.restart_base))
    if add_restarts:
        cmd = cmd + [*RESTARTS, str(args.restart_base)]
    return cmd + [
        "--embed-dim",
        str(args.embed_dim),
        "--hidden-dim",
        str(args.hidden_dim),
        "--num-layers",
        str(args.layers),
        "--dropout-hidden",
        "0.2",
        "--no-epoch-checkpoints",
        "--cpu",
        "--log-format",
        "simple",
        "--log-interval",
        "100",
        "--no-progress-bar",
        "--num-workers",
        "0",
    ]


def eval_command(args, data_bin, save):
    return [
        os.path.join(BIN, "fairseq-eval-lm"),
        data_bin,
        "--user-dir",
        recipes.USER_DIR,
        "--task",
        "alternating_lm",
        "--path",
        os.path.join(save, "checkpoint_best.pt"),
        "--gen-subset",
        "test",
        "--batch-size",
        "1",
        "--bptt",
        str(args.bptt),
        "--cpu",
        "--num-workers",
        "0",
    ]


def test_perplexity(save):
    path = os.path.join(save, "eval.log")
    if not os.path.isfile(path):
        return None
    found = re.findall(r"Perplexity: ([0-9.]+)", open(path).read())
    return float(found[-1]) if found else None


def run_one(args, config, seed, data_bin) -> None:
    """Train and score one run in a background process chain; returns the process."""
    save = os.path.join(args.out, config, f"seed{seed}")
    os.makedirs(save, exist_ok=True)
    train = shlex.join(train_command(args, config, seed, data_bin, save))
    evaluate = shlex.join(eval_command(args, data_bin, save))
    script = (
        f"{train} >> {shlex.quote(os.path.join(save, 'train.log'))} 2>&1 && "
        f"{evaluate} > {shlex.quote(os.path.join(save, 'eval.log'))} 2>&1"
    )
    return subprocess.Popen(["bash", "-c", script], env=env(), cwd=REPO, start_new_session=True)  # its own group


def read_curves(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def mean_curves(args, config, seeds) -> str:
    """OUT/<config>/mean.csv: the seeds' per-epoch means (epochs all of them reached)."""
    runs = [read_curves(os.path.join(args.out, config, f"seed{s}", "curves.csv")) for s in seeds]
    epochs = min(len(r) for r in runs)
    path = os.path.join(args.out, config, "mean.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "valid_ppl", "train_ppl", "synthetic", "restart", "sg_cos", "sg_norm_ratio"])
        for e in range(epochs):
            rows = [r[e] for r in runs]
            mean = {k: statistics.fmean(row.get(k, math.nan) for row in rows) for k in CURVE_COLUMNS}
            writer.writerow(
                [
                    int(rows[0]["epoch"]),
                    mean["valid_ppl"],
                    mean["train_ppl"],
                    int(rows[0]["synthetic"]),
                    int(rows[0]["restart"]),
                    mean["sg_cos"],
                    mean["sg_norm_ratio"],
                ]
            )
    return path


def add_minutes(save, minutes):
    """SAVE/minutes: the run's training and scoring time, summed over the study's invocations that ran it."""
    path = os.path.join(save, "minutes")
    before = float(open(path).read()) if os.path.isfile(path) else 0.0
    with open(path, "w") as f:
        f.write(f"{before + minutes:.1f}\n")


def spread(values):
    return f"{statistics.fmean(values):.2f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--corpus", default="wt2-slice", help="wt2-slice (default), sample, or a folder of train/valid/test.txt"
    )
    parser.add_argument(
        "--wikitext",
        default=os.path.join(REPO, "..", "shared", "data", "wikitext-2"),
        help="WikiText-2's folder, for wt2-slice (default: ../shared/data/wikitext-2)",
    )
    parser.add_argument(
        "--out", default=os.path.join(REPO, "runs", "study"), help="output folder (default: runs/study)"
    )
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--train-lines", type=int, default=4000)
    parser.add_argument("--valid-lines", type=int, default=500)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--restart-base", type=int, default=4, help="restarts after B, 2B, 4B, ... (default 4: 4, 8, 16, 32)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    setting = {k: v for k, v in vars(args).items() if k not in ("configs", "seeds", "jobs", "dry_run", "out")}
    data_bin = os.path.join(args.out, "data-bin")
    runs = [(c, s) for c in args.configs for s in args.seeds]
    if args.dry_run:
        for config, seed in runs:
            save = os.path.join(args.out, config, f"seed{seed}")
            print(shlex.join(train_command(args, config, seed, data_bin, save)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    setting_path = os.path.join(args.out, "setting.json")
    if os.path.isfile(setting_path) and json.load(open(setting_path)) != setting:
        sys.exit(f"study.py: error: {args.out} holds a study of another setting ({setting_path}); use another --out")
    json.dump(setting, open(setting_path, "w"), indent=1)
    counts = binarize(args, prepare_corpus(args))
    print(
        f"== {len(runs)} runs ({len(args.configs)} configurations x {len(args.seeds)} seeds), {args.jobs} at a time; "
        f"corpus {args.corpus}: train {counts['train']:,}, valid {counts['valid']:,}, test {counts['test']:,} tokens, "
        f"dictionary {counts['dictionary']:,}",
        flush=True,
    )
    start, waiting, running = (
        time.time(),
        [r for r in runs if test_perplexity(os.path.join(args.out, r[0], f"seed{r[1]}")) is None],
        {},
    )
    try:
        while waiting or running:
            while waiting and len(running) < args.jobs:
                config, seed = waiting.pop(0)
                running[(config, seed)] = (run_one(args, config, seed, data_bin), time.time())
                print(f"[{time.time() - start:6.0f} s] started {config} seed {seed}", flush=True)
            for key, (proc, began) in list(running.items()):
                if proc.poll() is not None:
                    del running[key]
                    save = os.path.join(args.out, key[0], f"seed{key[1]}")
                    if proc.returncode != 0 or test_perplexity(save) is None:
                        sys.exit(
                            f"study.py: error: run {key[0]} seed {key[1]} failed; its logs: {save}/train.log, eval.log"
                        )
                    add_minutes(save, (time.time() - began) / 60)
                    print(
                        f"[{time.time() - start:6.0f} s] {key[0]} seed {key[1]}: test ppl {test_perplexity(save):.2f}",
                        flush=True,
                    )
            time.sleep(5)
    finally:  # a failed run or Ctrl-C: stop the others, so that a rerun resumes them from their checkpoints alone
        for proc, _ in running.values():
            os.killpg(proc.pid, signal.SIGTERM)  # bash and the fairseq tool it runs
        for proc, _ in running.values():
            proc.wait()
    table = ["| configuration | runs | best valid ppl | test ppl | minutes per run |", "|---|---|---|---|---|"]
    for config in args.configs:
        saves = [os.path.join(args.out, config, f"seed{s}") for s in args.seeds]
        best = [min(r["valid_ppl"] for r in read_curves(os.path.join(s, "curves.csv"))) for s in saves]
        tests = [test_perplexity(s) for s in saves]
        minutes = [
            float(open(os.path.join(s, "minutes")).read()) for s in saves if os.path.isfile(os.path.join(s, "minutes"))
        ]
        table.append(
            f"| {config} | {len(saves)} | {spread(best)} | {spread(tests)} | "
            f"{f'{statistics.fmean(minutes):.1f}' if minutes else 'n/a'} |"
        )
    subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "plot_curves.py"),
            *[mean_curves(args, c, args.seeds) for c in args.configs],
            "-o",
            os.path.join(args.out, "curves.png"),
            "--labels",
            *[CONFIGS[c][2] for c in args.configs],
            "--title",
            f"mean of {len(args.seeds)} seeds, {args.corpus}",
        ],
        check=True,
        env=env(),
    )
    summary = (
        f"setting: {json.dumps(setting)}\n\nseeds {' '.join(map(str, args.seeds))}; wall time "
        f"{(time.time() - start) / 60:.0f} minutes with {args.jobs} jobs\n\n" + "\n".join(table) + "\n"
    )
    open(os.path.join(args.out, "summary.md"), "w").write(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
