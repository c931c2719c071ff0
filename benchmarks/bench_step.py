"""One training step of the paper's configuration, with and without the synthesizer.

    python benchmarks/bench_step.py [--arch qrnn_lm_ptb] [--vocab 10000] [--steps 3]

Builds the seed's model (qrnn_lm_ptb: 4 x 1550, emsize 400; batch 20, bptt
200) and the QRNN 50 x 1 synthesizer through fairseq's registries, and times
forward + backward + both optimiser steps on random tokens: without the
synthesizer, with it in a real phase (it is trained at s_0) and in a
synthetic phase (it also injects at s_T). Prints the median step times and
the ratios, measured side by side in one run.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def build(data_dir, arch, use_sg):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim import build_optimizer

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data_dir, "--user-dir", os.path.join(REPO, "altsg_fairseq"), "--task", "alternating_lm", "--arch", arch,
        "--criterion", "synthetic_gradient_lm", "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "1.2e-6",
        "--bptt", "200", "--batch-size", "20", "--cpu", *(["--use-sg"] if use_sg else []),
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).train()
    criterion = task.build_criterion(cfg.criterion)
    optimizer = build_optimizer(cfg.optimizer, list(model.parameters()))
    return task, model, criterion, optimizer


def time_steps(task, model, criterion, optimizer, synthetic, steps, vocab):
    if task.dni is not None:
        task.dni.synthetic = synthetic
    times = []
    for i in range(steps + 1):
        tokens = torch.randint(4, vocab, (20, 201))
        sample = {"net_input": {"src_tokens": tokens[:, :-1], "src_lengths": None, "stream": "train", "reset": i == 0},
                  "target": tokens[:, 1:], "ntokens": 20 * 200, "nsentences": 20, "lr_scale": 1.0}
        start = time.perf_counter()
        task.train_step(sample, model, criterion, optimizer, i)
        optimizer.clip_grad_norm(0.25)
        task.optimizer_step(optimizer, model, i)
        optimizer.zero_grad()
        if i:  # the first step warms up (allocations, compilation)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="qrnn_lm_ptb")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    with tempfile.TemporaryDirectory() as data_dir:
        with open(os.path.join(data_dir, "dict.txt"), "w") as f:
            f.writelines(f"w{i} 1\n" for i in range(args.vocab - 4))
        print(f"{args.arch}, vocabulary {args.vocab}, batch 20 x bptt 200, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        torch.manual_seed(0)
        plain = time_steps(*build(data_dir, args.arch, False), False, args.steps, args.vocab)
        torch.manual_seed(0)
        built = build(data_dir, args.arch, True)
        real = time_steps(*built, False, args.steps, args.vocab)
        synthetic = time_steps(*built, True, args.steps, args.vocab)
    n = sum(p.numel() for p in built[1].parameters())
    print(f"model parameters: {n:,}; synthesizer parameters: {sum(p.numel() for p in built[0].dni.synthesizer.parameters()):,}")
    print(f"step without synthesizer:          {plain:7.3f} s")
    print(f"step with synthesizer, real phase: {real:7.3f} s  ({real / plain:.3f}x)")
    print(f"step with synthesizer, synthetic:  {synthetic:7.3f} s  ({synthetic / plain:.3f}x)")


if __name__ == "__main__":
    main()
