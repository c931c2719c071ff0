"""float32 against bfloat16 autocast (--amp) on a CPU, through fairseq-train, side by side in one run.

    python benchmarks/bench_precision.py [--text DIR] [--paper-updates 6] [--small-updates 150]
                                         [--seeds 1 2 3] [--epochs 2] [--skip-paper] [--skip-quality]

Every training is a real fairseq-train on TEXT_DIR (default: the bundled
sample corpus, binarized with its 10,000 most frequent words, as
bench_throughput.py does), one thread per process. Printed, in order:

1. The rate of a 4000 x 1550 x 4650 matrix product (the paper model's widest
   layer over one batch) in float32 and bfloat16 at one thread, and with it
   each paper step's matrix-product bound: the step's matrix-product FLOPs
   (forward and both backward products of every layer and the tied softmax)
   over that rate.
2. The paper's configuration (examples/paper/recipes.py: ptb/bptt and ptb/dni
   in a synthetic phase, qrnn_lm_ptb, batch 20 x bptt 200, the QRNN
   synthesizer): step ms (the median of fairseq's per-update wpb / wps after
   the first two updates), words/s, float32 / bfloat16, the synthesizer's
   step cost (with / without), the step against its bound, and the hours of
   one 320-epoch PTB run (929,589 training tokens) at that step.
3. The small configuration (bench_throughput.py's: qrnn_lm 2 x 200, bptt 35,
   batch 20), the same figures; then two bfloat16 jobs side by side, one per
   core: words/s of each against the 2,200 recorded for the original code.
4. Quality: the small configuration with the QRNN synthesizer and a
   synthetic phase (--use-sg --sg-type qrnn --whenswitch 2), --epochs full
   epochs, each seed in float32 and in bfloat16 (two runs at a time, one per
   core): the validation perplexity of each, the means, fp32's spread, and
   fairseq-eval-lm of one float32-trained checkpoint scored in float32 and in
   bfloat16.
The runs of a comparison take turns (float32 first, then bfloat16 first),
so that a drifting machine favours neither.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples", "paper"))
from bench_throughput import BIN, REPO, SAMPLE, ORIGINAL_WORDS_PER_SECOND, SMALL_RUN, binarize, env, run_together  # noqa: E402
import recipes  # noqa: E402

PTB_TRAIN_TOKENS, PTB_EPOCHS = 929_589, 320
PAPER = {"emsize": 400, "nhid": 1550, "layers": 4, "vocab": 10_000, "batch": 20, "bptt": 200}
LOG = ["--cpu", "--no-save", "--disable-validation", "--log-format", "json", "--log-interval", "1", "--no-progress-bar"]


def matmul_rate(dtype, m=4000, k=1550, n=4650, repeat=5) -> float:
    """FLOP/s of an (m x k) @ (k x n) product in ``dtype`` at one thread, the median of ``repeat``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * m * k * n / statistics.median(times)


def paper_step_flops(p=PAPER) -> float:
    """Matrix-product FLOPs of one paper training step: per token, each QRNN layer's
    input (window 2 for the first) times its 3 gates, and the tied softmax; the
    backward pass does two products of each forward one's size."""
    sizes = [p["emsize"]] + [p["nhid"]] * (p["layers"] - 1) + [p["emsize"]]
    layers = sum(2 * (2 if n == 0 else 1) * sizes[n] * 3 * sizes[n + 1] for n in range(p["layers"]))
    per_token = layers + 2 * p["emsize"] * p["vocab"]
    return 3 * per_token * p["batch"] * p["bptt"]


def records(output: str, kind: str = "train_inner") -> list:
    return [json.loads(line[line.index("{") :]) for line in output.splitlines() if f"| {kind} |" in line]


def step_seconds(output: str) -> float:
    """The median of fairseq's per-update wpb / wps, after the first two updates."""
    rs = records(output)[2:]
    if not rs:
        sys.exit(f"bench_precision.py: error: no training updates logged:\n{output[-3000:]}")
    return statistics.median(float(r["wpb"]) / float(r["wps"]) for r in rs)


def train(data, flags, amp, extra=()):
    return [os.path.join(BIN, "fairseq-train"), data, *map(str, flags), *LOG, *(["--amp"] if amp else []), *extra]


def run(command) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"bench_precision.py: error: {os.path.basename(command[0])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def compare_precisions(name, variants, updates):
    """variants: {label: fairseq-train flags}; every label in float32 and bfloat16, taking turns.
    Returns {(label, amp): step seconds}."""
    steps = {}
    order = [(label, amp) for label in variants for amp in (False, True)]
    for i, (label, amp) in enumerate(order):
        if i % 4 >= 2:  # float32 first, then bfloat16 first
            amp = not amp
        output = run(train(variants[label][0], variants[label][1], amp, ["--max-update", str(updates)]))
        steps[(label, amp)] = step_seconds(output)
    tokens = PAPER["batch"] * PAPER["bptt"] if name == "paper" else 20 * 35
    print(f"\n{name} configuration, one thread: step ms (words/s)")
    print("| variant | float32 | bfloat16 (--amp) | float32 / bfloat16 |")
    print("|---|---|---|---|")
    for label in variants:
        a, b = steps[(label, False)], steps[(label, True)]
        print(f"| {label} | {a * 1e3:,.0f} ({tokens / a:,.0f}) | {b * 1e3:,.0f} ({tokens / b:,.0f}) | {a / b:.2f}x |")
    labels = list(variants)
    if len(labels) == 2:
        for amp, precision in ((False, "float32"), (True, "bfloat16")):
            print(
                f"{precision}: the step with the synthesizer is {steps[(labels[1], amp)] / steps[(labels[0], amp)]:.2f}x "
                f"the step without it"
            )
    return steps


def paper(data, updates):
    rates = {dtype: matmul_rate(dtype) for dtype in (torch.float32, torch.bfloat16)}
    flops = paper_step_flops()
    print(
        f"matrix products at one thread (4000 x 1550 x 4650): float32 {rates[torch.float32] / 1e9:.0f} GFLOP/s, "
        f"bfloat16 {rates[torch.bfloat16] / 1e9:.0f} GFLOP/s; the paper step's products: {flops / 1e9:.0f} GFLOP, "
        f"bound {flops / rates[torch.float32]:.2f} s in float32, {flops / rates[torch.bfloat16]:.2f} s in bfloat16"
    )
    with tempfile.TemporaryDirectory() as save:

        def flags(run_name, extra=()):
            command = recipes.commands(run_name, data, save, extra)[0]
            return command[2:]  # after "fairseq-train DATA"

        variants = {
            "without the synthesizer (ptb/bptt)": (data, flags("ptb/bptt")),
            "with it, synthetic phase (ptb/dni, --whenswitch 1)": (data, flags("ptb/dni", ["--whenswitch", "1"])),
        }
        steps = compare_precisions("paper", variants, updates)
    windows = PTB_TRAIN_TOKENS / (PAPER["batch"] * PAPER["bptt"])
    for (label, amp), s in steps.items():
        rate = rates[torch.bfloat16 if amp else torch.float32]
        print(
            f"  {label}, {'bfloat16' if amp else 'float32'}: step {s:.2f} s = {s / (flops / rate):.2f}x its "
            f"matrix-product bound; one {PTB_EPOCHS}-epoch PTB run: {s * windows * PTB_EPOCHS / 3600:,.0f} hours"
        )


def small(data, updates):
    base = [
        *SMALL_RUN,
        "--batch-size",
        "20",
        "--seed",
        "1",
    ]
    variants = {
        "without the synthesizer": (data, base),
        "with the QRNN synthesizer, synthetic phase": (
            data,
            [*base, "--use-sg", "--sg-type", "qrnn", "--whenswitch", "1"],
        ),
    }
    compare_precisions("small", variants, updates)
    outputs = run_together([train(data, base, True, ["--max-update", str(updates)]) for _ in range(2)])
    per_job = [20 * 35 / step_seconds(o) for o in outputs]
    print(
        f"two bfloat16 jobs side by side, one thread each: {', '.join(f'{w:,.0f}' for w in per_job)} words/s = "
        f"{', '.join(f'{w / ORIGINAL_WORDS_PER_SECOND:.2f}x' for w in per_job)} the original code's "
        f"{ORIGINAL_WORDS_PER_SECOND:,}"
    )


def quality(data, seeds, epochs):
    base = [
        *SMALL_RUN,
        "--batch-size",
        "20",
        "--batch-size-valid",
        "10",
        "--use-sg",
        "--sg-type",
        "qrnn",
        "--whenswitch",
        "2",
        "--max-epoch",
        str(epochs),
        "--cpu",
        "--log-format",
        "json",
        "--log-interval",
        "100",
        "--no-progress-bar",
        "--no-epoch-checkpoints",
    ]
    ppl = {}
    with tempfile.TemporaryDirectory() as root:
        for seed in seeds:
            commands = [
                [
                    os.path.join(BIN, "fairseq-train"),
                    data,
                    *base,
                    "--seed",
                    str(seed),
                    "--save-dir",
                    os.path.join(root, f"{seed}-{amp}"),
                    *(["--amp"] if amp else []),
                ]
                for amp in (False, True)
            ]
            for amp, output in zip((False, True), run_together(commands)):
                ppl[(seed, amp)] = float(records(output, "valid")[-1]["valid_ppl"])
        checkpoint = os.path.join(root, f"{seeds[0]}-False", "checkpoint_last.pt")
        evaluation = [
            os.path.join(BIN, "fairseq-eval-lm"),
            data,
            "--user-dir",
            os.path.join(REPO, "altsg_fairseq"),
            "--task",
            "alternating_lm",
            "--path",
            checkpoint,
            "--gen-subset",
            "valid",
            "--batch-size",
            "10",
            "--bptt",
            "35",
            "--cpu",
        ]
        scored = {
            amp: float(run(evaluation + (["--amp"] if amp else [])).split("Perplexity: ")[1].split()[0])
            for amp in (False, True)
        }
    print(
        f"\nquality: the small configuration with the QRNN synthesizer (synthetic from epoch 2), {epochs} epochs: "
        f"validation perplexity"
    )
    print("| seed | float32 | bfloat16 (--amp) |")
    print("|---|---|---|")
    for seed in seeds:
        print(f"| {seed} | {ppl[(seed, False)]:.2f} | {ppl[(seed, True)]:.2f} |")
    m32, m16 = (statistics.mean(ppl[(s, amp)] for s in seeds) for amp in (False, True))
    spread = max(ppl[(s, False)] for s in seeds) - min(ppl[(s, False)] for s in seeds)
    print(f"| mean | {m32:.2f} | {m16:.2f} |")
    print(
        f"bfloat16's mean is {100 * (m16 / m32 - 1):+.2f}% of float32's; float32's seeds span {spread:.2f} "
        f"({100 * spread / m32:.2f}% of its mean)"
    )
    print(
        f"fairseq-eval-lm of seed {seeds[0]}'s float32 checkpoint on valid: float32 {scored[False]:.2f}, "
        f"bfloat16 {scored[True]:.2f} ({100 * (scored[True] / scored[False] - 1):+.3f}%)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=SAMPLE, help="folder with train.txt and valid.txt")
    parser.add_argument("--paper-updates", type=int, default=6, help="updates of each paper-configuration run")
    parser.add_argument("--small-updates", type=int, default=150, help="updates of each small-configuration run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each quality run")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; one thread per process (OMP_NUM_THREADS=1)")
    with tempfile.TemporaryDirectory() as data:
        binarize(args.text, data)
        if not args.skip_paper:
            paper(data, args.paper_updates)
        small(data, args.small_updates)
        if not args.skip_quality:
            quality(data, args.seeds, args.epochs)


if __name__ == "__main__":
    main()
