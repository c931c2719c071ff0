"""Training throughput per core: fairseq-train against a plain PyTorch loop, one worker against two.

    python benchmarks/bench_throughput.py [--text DIR] [--rounds 3] [--updates 150]

The original code's small configuration (qrnn_lm --embed-dim 200 --hidden-dim 200
--num-layers 2, batch 20, --bptt 35, adam_l2 1e-3 with weight decay 1.2e-6,
clipping 0.25, AWD dropouts, a 10,000-word vocabulary), one thread per
process (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1) and no other variable set, on
TEXT_DIR/{train,valid,test}.txt (default: the bundled sample corpus,
binarized with its 10,000 most frequent words). Every round measures, in
turn (the order alternates between rounds, so that a drifting machine
favours neither side):

- fairseq-train alone, and benchmarks/plain_lm.py (the same model and update
  in plain PyTorch) alone: words/s of each, "quiet";
- the two side by side, one per core (the plain loop runs for as long as
  fairseq-train does, then stops): words/s of each, "two jobs";
- one worker (batch 20) and two gloo workers (batch 10 each, the same global
  rows), one thread each: words/s of the job, and where each update's time
  goes (benchmarks/update_breakdown.py: forward+backward, the wait for the
  slower worker, the gradient all-reduce, what every worker repeats, the
  rest), per worker.

words/s is the median of fairseq's logged wps over the updates after the
first 25 (plain_lm.py: after its warm-up). It prints each round and the
medians, the ratios, the share of the plain loop's step spent in matrix
products, and the framework's share of fairseq-train's step (1 - plain step /
fairseq step, quiet).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.path.dirname(os.path.abspath(sys.executable))
SAMPLE = os.path.join(REPO, "examples", "sample_corpus")
ORIGINAL_WORDS_PER_SECOND = 2200  # the original code (alternate_sg), this configuration, one thread, this machine type
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
SMALL = [
    "--arch",
    "qrnn_lm",
    "--embed-dim",
    "200",
    "--hidden-dim",
    "200",
    "--num-layers",
    "2",
    "--bptt",
    "35",
    "--optimizer",
    "adam_l2",
    "--lr",
    "1e-3",
    "--weight-decay",
    "1.2e-6",
    "--clip-norm",
    "0.25",
]


# the plugin's task and criterion with the small configuration (every fairseq-train of the benchmarks)
SMALL_RUN = [
    "--user-dir",
    os.path.join(REPO, "altsg_fairseq"),
    "--task",
    "alternating_lm",
    "--criterion",
    "synthetic_gradient_lm",
    *SMALL,
]


def env():
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **ONE_THREAD)


def binarize(text: str, dest: str) -> None:
    common = [os.path.join(BIN, "fairseq-preprocess"), "--only-source", "--log-format", "simple"]
    subprocess.run(
        [
            *common,
            "--dict-only",
            "--trainpref",
            os.path.join(text, "train.txt"),
            "--nwordssrc",
            "9996",
            "--destdir",
            os.path.join(dest, "dict"),
        ],
        check=True,
        env=env(),
        capture_output=True,
    )
    subprocess.run(
        [
            *common,
            "--srcdict",
            os.path.join(dest, "dict", "dict.txt"),
            "--workers",
            "2",
            "--trainpref",
            os.path.join(text, "train.txt"),
            "--validpref",
            os.path.join(text, "valid.txt"),
            "--destdir",
            dest,
        ],
        check=True,
        env=env(),
        capture_output=True,
    )


def fairseq_train(
    data: str, updates: int, batch: int = 20, workers: int = 1, port: int = 29600, breakdown: bool = False
) -> list:
    """fairseq-train's command line(s) of the small configuration; with ``breakdown``, through
    update_breakdown.py (the same run, with its update's parts timed)."""
    program = [sys.executable, os.path.join(REPO, "benchmarks", "update_breakdown.py")]
    command = [
        *(program if breakdown else [os.path.join(BIN, "fairseq-train")]),
        data,
        *SMALL_RUN,
        "--batch-size",
        str(batch),
        "--max-update",
        str(updates + 25),
        "--cpu",
        "--no-save",
        "--disable-validation",
        "--log-format",
        "json",
        "--log-interval",
        "25",
        "--no-progress-bar",
        "--seed",
        "1",
    ]
    if workers == 1:
        return [command]
    return [
        command
        + [
            "--distributed-world-size",
            str(workers),
            "--distributed-rank",
            str(rank),
            "--distributed-no-spawn",
            "--distributed-init-method",
            f"tcp://127.0.0.1:{port}",
            "--device-id",
            "0",
            "--distributed-backend",
            "gloo",
            "--ddp-backend",
            "legacy_ddp",
        ]
        for rank in range(workers)
    ]


def plain_loop(text: str, updates: int, profile: bool = False, log_interval: int = 0) -> list:
    return [
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "plain_lm.py"),
            text,
            "--updates",
            str(updates),
            "--warmup",
            "25",
            "--log-interval",
            str(log_interval),
            *(["--profile"] if profile else []),
        ]
    ]


def run_beside(main, companion):
    """Run ``main`` with ``companion`` (a plain loop that logs every interval) beside it
    for as long as main runs, then stop the companion: both outputs, every logged
    interval of each measured while the other ran."""
    logs = [tempfile.TemporaryFile("w+") for _ in range(2)]
    procs = [
        subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
        for c, log in zip([main, companion], logs)
    ]
    code = procs[0].wait()
    procs[1].terminate()
    procs[1].wait()
    outs = []
    for log in logs:
        log.seek(0)
        outs.append(log.read())
    if code != 0:
        sys.exit(f"bench_throughput.py: error: fairseq-train failed:\n{outs[0][-3000:]}")
    return outs


def run_together(commands):
    """Start every command at once; returns their outputs (stdout + stderr)."""
    logs = [tempfile.TemporaryFile("w+") for _ in commands]
    procs = [
        subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
        for c, log in zip(commands, logs)
    ]
    outs = []
    for proc, log, command in zip(procs, logs, commands):
        if proc.wait() != 0:
            log.seek(0)
            sys.exit(f"bench_throughput.py: error: {os.path.basename(command[0])} failed:\n{log.read()[-3000:]}")
        log.seek(0)
        outs.append(log.read())
    return outs


def words_per_second(output: str) -> dict:
    """fairseq's median logged wps after the first record, plain_lm.py's median interval
    (when it logged intervals), or plain_lm.py's JSON line."""
    records = [json.loads(line[line.index("{") :]) for line in output.splitlines() if "| train_inner |" in line]
    if records:
        return {"words_per_second": statistics.median(float(r["wps"]) for r in records[1:])}
    intervals = [
        json.loads(line)["interval_words_per_second"]
        for line in output.splitlines()
        if line.startswith('{"interval_words_per_second"')
    ]
    if intervals:
        return {"words_per_second": statistics.median(intervals)}
    return json.loads(output.strip().splitlines()[-1])


def update_breakdown(output: str) -> dict:
    """update_breakdown.py's ms per update, from a run's output."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"update_breakdown"'):
            return json.loads(line)["update_breakdown"]
    sys.exit("bench_throughput.py: error: a run printed no update breakdown")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=SAMPLE, help="folder of train.txt and valid.txt (default: the sample corpus)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=150, help="timed updates of every run (after 25 more)")
    args = parser.parse_args()
    rows = []
    parts = {"1 worker": [], "2 workers": []}  # per round, per rank: update_breakdown.py's ms per update
    with tempfile.TemporaryDirectory() as data:
        binarize(args.text, data)
        matmul_share = words_per_second(run_together(plain_loop(args.text, 30, profile=True))[0])["matmul_share"]
        for r in range(args.rounds):
            row = {}
            order = ["fairseq", "plain"] if r % 2 == 0 else ["plain", "fairseq"]
            for name in order:  # quiet: one job alone
                command = (
                    fairseq_train(data, args.updates) if name == "fairseq" else plain_loop(args.text, args.updates)
                )
                row[f"{name} quiet"] = words_per_second(run_together(command)[0])["words_per_second"]
            # the plain loop runs beside fairseq-train from its start to its end (more updates than it
            # needs, stopped when fairseq-train ends), so that neither side runs alone for part of the time
            fairseq_out, plain_out = run_beside(
                fairseq_train(data, args.updates)[0], plain_loop(args.text, 100 * args.updates, log_interval=25)[0]
            )
            row["fairseq two jobs"] = words_per_second(fairseq_out)["words_per_second"]
            row["plain two jobs"] = words_per_second(plain_out)["words_per_second"]
            for workers in [1, 2] if r % 2 == 0 else [2, 1]:
                outs = run_together(
                    fairseq_train(
                        data, args.updates, batch=20 // workers, workers=workers, port=29600 + r, breakdown=True
                    )
                )
                name = f"{workers} worker{'s' if workers > 1 else ''}"
                row[name] = words_per_second(outs[0])["words_per_second"]
                parts[name].append([update_breakdown(out) for out in outs])
            rows.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in row.items()), flush=True)
            for name in ("1 worker", "2 workers"):
                for rank, ms in enumerate(parts[name][-1]):
                    print(f"  {name}, rank {rank}, ms per update: " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    ratios = {
        "fairseq / plain, quiet": [row["fairseq quiet"] / row["plain quiet"] for row in rows],
        "fairseq / plain, two jobs": [row["fairseq two jobs"] / row["plain two jobs"] for row in rows],
        f"fairseq two jobs / the original code's {ORIGINAL_WORDS_PER_SECOND:,}": [
            row["fairseq two jobs"] / ORIGINAL_WORDS_PER_SECOND for row in rows
        ],
        "2 workers / 1 worker": [row["2 workers"] / row["1 worker"] for row in rows],
    }
    print("\nwords/s, medians of the rounds (one thread per process):")
    for key, value in median.items():
        print(f"  {key:18} {value:8,.0f}")
    print("ratios (per round; median):")
    for key, values in ratios.items():
        print(f"  {key:34} {', '.join(f'{v:.2f}' for v in values)}; {statistics.median(values):.2f}")
    print("where an update's time goes, ms (medians of the rounds, rank 0):")
    for name in parts:
        keys = parts[name][0][0]
        print(f"  {name:9} " + ", ".join(f"{k} {statistics.median(p[0][k] for p in parts[name]):.1f}" for k in keys))
    one = statistics.median(p[0]["update"] for p in parts["1 worker"])
    two = {k: statistics.median(p[0][k] for p in parts["2 workers"]) for k in parts["2 workers"][0][0]}
    floor = two["update"] - two["gradient all-reduce"] - two["wait+stats sync"]
    print(
        f"  2 workers without the all-reduce and the wait: {floor:.1f} ms an update, "
        f"at most {one / floor:.2f}x one worker's {one:.1f} ms"
    )
    framework = 1 - median["fairseq quiet"] / median["plain quiet"]  # 1 - plain step / fairseq step
    print(
        f"the plain loop's step: {matmul_share:.0%} in matrix products; fairseq-train's step: "
        f"{matmul_share * median['fairseq quiet'] / median['plain quiet']:.0%} in matrix products, "
        f"{framework:+.0%} in the framework (1 - plain step / fairseq step)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
