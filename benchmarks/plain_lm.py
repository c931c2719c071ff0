"""The original code's small QRNN language model trained by a plain PyTorch loop: no fairseq.

    python benchmarks/plain_lm.py TEXT_DIR [--updates 150] [--warmup 20] [--profile]

What a researcher would write without fairseq, the yardstick of
bench_throughput.py: TEXT_DIR/train.txt as one stream of words (an <eos> per
line, the 10,000 most frequent words, the rest <unk>), cut into 20 rows;
windows of the AWD lengths around --bptt 35; embedding 200, two QRNN layers
(the first with a window of 2) of 200 with weight drop 0.1 (this package's
pure-PyTorch layers), AWD dropouts (0.4 / 0.3 / 0.4 / 0.1), the output tied
to the embedding, AR 2 and TAR 1, clipping at 0.25 and PyTorch's Adam with
L2 weight decay 1.2e-6. Prints the words per second of the updates after the
warm-up and, with --profile, the share of the step spent in matrix products.
"""

import argparse
import collections
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the repository
from altsg_fairseq.modules import RecurrentStack, embedding_dropout, locked_dropout, map_state  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def read_stream(path: str, vocab: int) -> torch.Tensor:
    with open(path, encoding="utf-8") as f:
        lines = [line.split() + ["<eos>"] for line in f]
    counts = collections.Counter(w for line in lines for w in line)
    ids = {w: i + 1 for i, (w, _) in enumerate(counts.most_common(vocab - 1))}  # 0 is <unk>
    return torch.tensor([ids.get(w, 0) for line in lines for w in line])


class SmallQRNNLM(nn.Module):
    def __init__(self, vocab: int, size: int = 200):
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.rnn = RecurrentStack("qrnn", size, size, size, 2, dropout_hidden=0.3, weight_drop=0.1)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens, state):
        x = locked_dropout(embedding_dropout(self.embed, tokens.t(), 0.1, self.training), 0.4, self.training)
        raw, state = self.rnn(x, state)
        dropped = locked_dropout(raw, 0.4, self.training)
        return F.linear(dropped.transpose(0, 1), self.embed.weight, self.bias), raw, dropped, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text_dir")
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--profile", action="store_true", help="also profile 10 updates: the matrix products' share")
    parser.add_argument(
        "--log-interval",
        type=int,
        default=0,
        help="also print each N timed updates' words/s as a JSON line (flushed), for runs that are "
        "stopped from outside",
    )
    args = parser.parse_args()
    torch.manual_seed(1)
    stream = read_stream(os.path.join(args.text_dir, "train.txt"), 10_000)
    rows = stream[: len(stream) // 20 * 20].view(20, -1)
    model = SmallQRNNLM(10_000).train()
    # fused, as the plugin's adam_l2: the same update in one pass over each tensor
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1.2e-6, fused=True)
    rng = np.random.default_rng(1)
    state, position, words, started = None, 0, 0, None

    def update():
        nonlocal state, position
        base = args.bptt if rng.random() < 0.95 else args.bptt / 2
        length = min(max(5, int(rng.normal(base, 5))), rows.size(1) - 1 - position)
        if length < 1:  # the end of the rows: a new pass
            state, position = None, 0
            return 0
        x, y = rows[:, position : position + length], rows[:, position + 1 : position + 1 + length]
        logits, raw, dropped, new_state = model(x, state)
        state, position = map_state(new_state, torch.Tensor.detach), position + length
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss = loss + 2 * dropped.pow(2).mean() + (raw[1:] - raw[:-1]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for group in optimizer.param_groups:  # the original code's lr scaling by window length
            group["lr"] = 1e-3 * length / args.bptt
        optimizer.step()
        return y.numel()

    for n in range(args.warmup + args.updates):
        if n == args.warmup:
            started, words = time.perf_counter(), 0
            interval_started, interval_words = started, 0
        done = update()
        words += done
        if n >= args.warmup and args.log_interval:
            interval_words += done
            if (n - args.warmup + 1) % args.log_interval == 0:
                now = time.perf_counter()
                print(json.dumps({"interval_words_per_second": interval_words / (now - interval_started)}), flush=True)
                interval_started, interval_words = now, 0
    seconds = time.perf_counter() - started
    result = {
        "words_per_second": words / seconds,
        "seconds_per_update": seconds / args.updates,
        "threads": torch.get_num_threads(),
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            begun = time.perf_counter()
            for _ in range(10):
                update()
            wall_us = (time.perf_counter() - begun) * 1e6
        # of the wall time (Python and dispatch included), not of the operators' summed times
        result["matmul_share"] = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS) / wall_us
    print(json.dumps(result))


if __name__ == "__main__":
    main()
