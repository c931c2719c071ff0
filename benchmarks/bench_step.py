"""One training step with and without the synthesizer, measured side by side.

    python benchmarks/bench_step.py [--config paper|small] [--steps 4] [--amp] [--threads N]

``paper``: the published model (qrnn_lm_ptb: 4 x 1550, emsize 400, 10,000
words; batch 20, bptt 200) and the QRNN 50 x 1 synthesizer over its 121,000
carried state numbers. ``small``: the original code's small configuration (qrnn_lm
2 x 200, emsize 200, bptt 35) with a GRU 50 x 1 synthesizer. Both built
through fairseq's registries; a step is forward + backward + clipping + both
optimiser steps on random tokens (adam_l2, as the recipes), through the
task's train_step and optimizer_step. Three variants take turns, step by
step (so that a drifting machine favours none): without the synthesizer,
with it in a real phase (trained at s_0), in a synthetic phase (also
injecting at s_T). Prints the median step times and the ratios. ``--amp``:
bfloat16 autocast, as fairseq-train's ``--amp --cpu`` (the synthesizer stays
float32); ``--threads``: PyTorch's thread count (default: its own).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIGS = {
    "paper": {"flags": ["--arch", "qrnn_lm_ptb"], "sg": ["--sg-type", "qrnn"], "bptt": 200},
    "small": {
        "flags": ["--arch", "qrnn_lm", "--embed-dim", "200", "--hidden-dim", "200", "--num-layers", "2"],
        "sg": ["--sg-type", "gru"],
        "bptt": 35,
    },
}
VOCAB, ROWS = 10_000, 20


def build(data_dir, config, use_sg, amp):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim import build_optimizer

    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [
            data_dir,
            "--user-dir",
            os.path.join(REPO, "altsg_fairseq"),
            "--task",
            "alternating_lm",
            "--criterion",
            "synthetic_gradient_lm",
            "--optimizer",
            "adam_l2",
            "--lr",
            "1e-3",
            "--weight-decay",
            "1.2e-6",
            "--bptt",
            str(config["bptt"]),
            "--batch-size",
            str(ROWS),
            "--cpu",
            *config["flags"],
            *(["--use-sg", *config["sg"]] if use_sg else []),
            *(["--amp"] if amp else []),
        ],
    )
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).train()
    criterion = task.build_criterion(cfg.criterion)
    return task, model, criterion, build_optimizer(cfg.optimizer, list(model.parameters()))


def one_step(built, synthetic, bptt, i):
    """Seconds of one training step of ``built`` (task, model, criterion, optimizer)."""
    task, model, criterion, optimizer = built
    if task.dni is not None:
        task.dni.synthetic = synthetic
    tokens = torch.randint(4, VOCAB, (ROWS, bptt + 1))
    sample = {
        "net_input": {"src_tokens": tokens[:, :-1], "src_lengths": None, "stream": "train", "reset": i == 0},
        "target": tokens[:, 1:],
        "ntokens": ROWS * bptt,
        "nsentences": ROWS,
        "lr_scale": 1.0,
    }
    start = time.perf_counter()
    task.train_step(sample, model, criterion, optimizer, i)
    optimizer.clip_grad_norm(0.25)
    task.optimizer_step(optimizer, model, i)
    optimizer.zero_grad()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="paper")
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each variant (after one warm-up step)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (as --amp --cpu)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: its own count)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    sys.path.insert(0, REPO)
    with tempfile.TemporaryDirectory() as data_dir:
        with open(os.path.join(data_dir, "dict.txt"), "w") as f:
            f.writelines(f"w{i} 1\n" for i in range(VOCAB - 4))
        print(
            f"{args.config} configuration ({' '.join(config['flags'])}, {' '.join(config['sg'])}), "
            f"batch {ROWS} x bptt {config['bptt']}, {'bfloat16 autocast' if args.amp else 'float32'}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        torch.manual_seed(0)
        without = build(data_dir, config, False, args.amp)
        torch.manual_seed(0)
        with_sg = build(data_dir, config, True, args.amp)
        variants = {"without": (without, False), "real phase": (with_sg, False), "synthetic phase": (with_sg, True)}
        times = {name: [] for name in variants}
        for i in range(args.steps + 1):
            for name, (built, synthetic) in variants.items():
                seconds = one_step(built, synthetic, config["bptt"], i)
                if i:  # the first step warms up (allocations, compilation)
                    times[name].append(seconds)
    task, model = with_sg[0], with_sg[1]
    print(
        f"model parameters: {sum(p.numel() for p in model.parameters()):,}; synthesizer parameters: "
        f"{sum(p.numel() for p in task.dni.synthesizer.parameters()):,}"
    )
    base = statistics.median(times["without"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"step {name:16} {median:7.3f} s  ({median / base:.3f}x)   [{', '.join(f'{v:.3f}' for v in values)}]")
    # the diagnostics (sg_loss, sg_cos and the norms, overall and per layer: sums in float64) that
    # every update's backward pass reports, timed alone at this state's shape
    width = (
        sum(task.dni.layer_sizes)
        if task.dni.layer_sizes
        else model.decoder.start_state("diagnostics", True, ROWS).size(1)
    )
    g_hat, g_true = torch.randn(ROWS, width), torch.randn(ROWS, width)
    seconds = []
    for _ in range(20):
        start = time.perf_counter()
        task.dni._window = dict.fromkeys(task.dni._sum_keys(width), torch.zeros((), dtype=torch.float64))
        task.dni._record(g_hat, g_true, torch.ones(2))
        task.dni.pop_stats()
        seconds.append(time.perf_counter() - start)
    cost = statistics.median(seconds)
    print(
        f"diagnostics over {ROWS} x {width:,} state numbers: {cost * 1e3:.2f} ms per update "
        f"({cost / statistics.median(times['real phase']):.2%} of the real-phase step)"
    )


if __name__ == "__main__":
    main()
