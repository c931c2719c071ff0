"""Forget-mult speed, forward + backward, the compiled path against the original loop.

    python benchmarks/bench_forget_mult.py [--runs 3] [--repeat 5] [--threads 2 1] [--gpu-only]

Shapes: the base model's (T=200, B=20, H=1550) and the synthesizer's
(T=101,000, B=1, H=50: the QRNN synthesizer's one long sequence).

CPU: the original loop (alternate_sg's QRNN on a CPU: a Python loop over time,
``c = f_t * x_t + (1 - f_t) * c`` on ``unbind``-ed steps) against the compiled
path (``forget_mult(..., backend="cpu")``, float32 and bfloat16 gates), each
timed as forward + ``.sum().backward()``, the median of ``--repeat`` timings,
with PyTorch at each of ``--threads`` threads for both; ``--runs`` times over,
so that a ratio is seen more than once. The compiled path's rate is its
forward + backward traffic (read f, x; write c; read f, x, c, grad; write the
two gradients) over its time, next to this machine's streaming rate measured
in the same run (a large tensor copy at the same thread count: read + write),
and, once, what a fresh block costs: writing a newly allocated 64 MB block
against writing the same block again (glibc always maps a block that large
afresh, and returns it when freed; smaller ones too once enough is freed at
the top of its heap: the difference is the page faults that the compiled
path's recycled buffers avoid).
On a GPU: kernel times (CUDA events) of the one-thread-per-column design (the
original code's) and of the chunked scan, and the memory bandwidth reached as
a share of this card's measured device-to-device copy bandwidth.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gpu_check: the GPU timing
from altsg_fairseq.modules.forget_mult import forget_mult  # noqa: E402

SHAPES = {"base (T=200, B=20, H=1550)": (200, 20, 1550), "synthesizer (T=101000, B=1, H=50)": (101_000, 1, 50)}


def original_loop(f, x, h0):
    """alternate_sg's forget-mult on a CPU, written out: one step of autograd ops per time step."""
    c, states = h0, []
    for f_t, x_t in zip(f.unbind(0), x.unbind(0)):
        c = f_t * x_t + (1 - f_t) * c
        states.append(c)
    return torch.stack(states)


def compiled(f, x, h0):
    return forget_mult(f, x, h0, backend="cpu")


def median_seconds(fn, f, x, h0, repeat):
    """The median of ``repeat`` timings of forward + .sum().backward() (fresh leaves each time)."""
    times = []
    for _ in range(repeat):
        fi, xi, hi = (t.detach().requires_grad_() for t in (f, x, h0))
        start = time.perf_counter()
        fn(fi, xi, hi).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def streaming_rate(repeat=5, numel=64 << 20):
    """Bytes per second of a large float32 copy (read + write), the median of ``repeat``."""
    src, dst = torch.rand(numel), torch.empty(numel)
    dst.copy_(src)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * 4 * numel / statistics.median(times)


def page_fault_cost(repeat=9, numel=16 << 20):
    """(ms to write a fresh block, ms to write an existing one) of ``numel`` float32, medians."""
    block = torch.empty(numel)
    block.fill_(1.0)
    fresh, again = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        torch.empty(numel).fill_(1.0)
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        block.fill_(1.0)
        again.append(time.perf_counter() - start)
    return statistics.median(fresh) * 1e3, statistics.median(again) * 1e3


def traffic_bytes(T, B, H, gate_bytes=4, grad_rows=True):
    """Forward: read f, x, write c; backward: read f, x, c (and grad_c, unless it is one row, as the
    gradient of a sum is), write grad_f, grad_x; c and grad_c float32."""
    return T * B * H * (6 * gate_bytes + 4 * (3 if grad_rows else 2))


def cpu_rows(runs, repeat, thread_counts):
    print(f"CPU: torch {torch.__version__}; each figure the median of {repeat} timings of forward + backward")
    before = torch.get_num_threads()
    ratios = {}
    torch.set_num_threads(1)
    fresh, again = page_fault_cost()
    megabytes = (16 << 20) * 4 / 1e6
    print(
        f"a {megabytes:.1f} MB block written, one thread: freshly allocated {fresh:.2f} ms, again {again:.2f} ms "
        f"(page faults: {(fresh - again) / megabytes:.2f} ms a megabyte)"
    )
    try:
        for run in range(1, runs + 1):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                stream = streaming_rate()
                print(
                    f"run {run}, PyTorch at {threads} thread{'s' if threads > 1 else ''}: "
                    f"streaming rate {stream / 1e9:.1f} GB/s (copy, read + write)"
                )
                for name, (T, B, H) in SHAPES.items():
                    f, x, h0 = torch.rand(T, B, H), torch.randn(T, B, H), torch.randn(B, H)
                    median_seconds(compiled, f, x, h0, 1)  # load the compiled kernels
                    t_kernel = median_seconds(compiled, f, x, h0, repeat)
                    t_bf16 = median_seconds(compiled, f.bfloat16(), x.bfloat16(), h0, repeat)
                    t_loop = median_seconds(original_loop, f, x, h0, repeat)
                    ratio = t_loop / t_kernel
                    ratios.setdefault((name, threads), []).append(ratio)
                    rate, rate16 = (
                        traffic_bytes(T, B, H, b, grad_rows=False) / t for b, t in ((4, t_kernel), (2, t_bf16))
                    )
                    print(
                        f"  {name}: original loop {t_loop * 1e3:9.1f} ms | compiled {t_kernel * 1e3:7.2f} ms "
                        f"({rate / 1e9:.1f} GB/s = {rate / stream:.0%} of streaming) | bfloat16 gates "
                        f"{t_bf16 * 1e3:7.2f} ms ({rate16 / 1e9:.1f} GB/s) | speed-up {ratio:.1f}x"
                    )
    finally:
        torch.set_num_threads(before)
    print("speed-up of the compiled path over the original loop, every run:")
    for (name, threads), values in ratios.items():
        print(
            f"  {name}, {threads} thread{'s' if threads > 1 else ''}: "
            f"{', '.join(f'{v:.1f}x' for v in values)} (lowest {min(values):.1f}x)"
        )


def gpu_rows(repeat):
    from altsg_fairseq.modules import forget_mult_cuda
    from gpu_check import copy_bandwidth, gpu_ms

    copy = copy_bandwidth()
    print(f"GPU: {torch.cuda.get_device_name()}, device-to-device copy {copy / 1e9:.0f} GB/s (measured)")

    def kernel_ms(fn):
        return gpu_ms(fn, repeat)

    for name, (T, B, H) in SHAPES.items():
        N = B * H
        f, x = torch.rand(T, N, device="cuda"), torch.randn(T, N, device="cuda")
        h0, grad = torch.randn(N, device="cuda"), torch.randn(T, N, device="cuda")
        c = forget_mult_cuda.forward(f, x, h0)

        def design(chunk):
            fwd = kernel_ms(lambda: forget_mult_cuda.forward(f, x, h0, chunk=chunk))
            bwd = kernel_ms(lambda: forget_mult_cuda.backward(f, x, h0, c, grad, chunk=chunk))
            return fwd, bwd

        print(f"  {name}")
        seq = design(0)
        gbps = traffic_bytes(T, B, H) / ((seq[0] + seq[1]) / 1e3)
        print(
            f"    one thread per column  fwd {seq[0]:.3f} ms  bwd {seq[1]:.3f} ms  "
            f"{gbps / 1e9:.0f} GB/s = {gbps / copy:.0%} of the measured copy bandwidth"
        )
        L = forget_mult_cuda.chunk_length(T, N)
        if L:
            scan = design(L)
            print(
                f"    chunked scan (L={L})  fwd {scan[0]:.3f} ms  bwd {scan[1]:.3f} ms  "
                f"speed-up over one thread per column: {sum(seq) / sum(scan):.1f}x"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="times to measure every ratio")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure (their median is reported)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2, 1], help="PyTorch thread counts, both paths alike"
    )
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()
    if not args.gpu_only:
        cpu_rows(args.runs, args.repeat, args.threads)
    if torch.cuda.is_available():
        gpu_rows(args.repeat * 4)
    else:
        print("GPU: none here (CUDA rows skipped)")


if __name__ == "__main__":
    main()
