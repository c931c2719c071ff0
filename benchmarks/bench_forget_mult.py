"""Forget-mult speed, forward + backward, every backend side by side.

    python benchmarks/bench_forget_mult.py [--repeat N] [--skip-seed]

Shapes: the base model's (T=200, B=20, H=1550) and the synthesizer's
(T=101,000, B=1, H=50: the QRNN synthesizer's one long sequence).
CPU rows: the seed's loop (the PyTorch-QRNN CPU fallback: one multiply over
the whole f * x, then a Python loop adding (1 - f_t) * c_{t-1}), this
package's reference loop, and the compiled CPU path; ratios are against the
seed's loop, measured in the same run. On a GPU: kernel times (CUDA events) of
the one-thread-per-column design (the original code's) and of the chunked
scan, and the memory bandwidth reached (bytes read and written / time) as a
share of this card's measured device-to-device copy bandwidth.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gpu_check: the GPU timing
from altsg_fairseq.modules import forget_mult_reference  # noqa: E402
from altsg_fairseq.modules.forget_mult import forget_mult  # noqa: E402

SHAPES = {"base (T=200, B=20, H=1550)": (200, 20, 1550), "synthesizer (T=101000, B=1, H=50)": (101_000, 1, 50)}


def seed_loop(f, x, h0):
    """The seed's CPU forget-mult, written out: (f * x) split per step, then the carry."""
    keep = (1 - f).split(1, dim=0)
    prev, out = h0, []
    for t, h in enumerate((f * x).split(1, dim=0)):
        if prev is not None:
            h = h + keep[t] * prev
        h = h.view(h.size()[1:])
        out.append(h)
        prev = h
    return torch.stack(out)


def time_cpu(fn, f, x, h0, grad, repeat):
    best = float("inf")
    for _ in range(repeat):
        fi, xi, hi = (t.detach().requires_grad_() for t in (f, x, h0))
        start = time.perf_counter()
        fn(fi, xi, hi).backward(grad)
        best = min(best, time.perf_counter() - start)
    return best


def traffic_bytes(T, B, H, itemsize=4):
    """Forward: read f, x, write c; backward: read f, x, c, grad_c, write grad_f, grad_x."""
    return 9 * T * B * H * itemsize


def cpu_rows(repeat, skip_seed):
    print(f"CPU: {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, (T, B, H) in SHAPES.items():
        f, x, h0 = torch.rand(T, B, H), torch.randn(T, B, H), torch.randn(B, H)
        grad = torch.randn(T, B, H)
        compiled = lambda *a: forget_mult(*a, backend="cpu")  # noqa: E731
        time_cpu(compiled, f, x, h0, grad, 1)  # compile / load the cache
        t_fast = time_cpu(compiled, f, x, h0, grad, max(repeat, 3))
        t_ref = time_cpu(forget_mult_reference, f, x, h0, grad, 1 if T > 10_000 else repeat)
        t_seed = None if skip_seed else time_cpu(seed_loop, f, x, h0, grad, 1 if T > 10_000 else repeat)
        gbps = traffic_bytes(T, B, H) / t_fast / 1e9
        print(f"  {name}")
        if t_seed:
            print(f"    seed loop       {t_seed * 1e3:10.1f} ms")
        print(f"    reference loop  {t_ref * 1e3:10.1f} ms")
        print(f"    compiled (cpu)  {t_fast * 1e3:10.2f} ms   {gbps:.1f} GB/s of forward+backward traffic")
        if t_seed:
            print(f"    speed-up of the compiled path over the seed loop: {t_seed / t_fast:.1f}x")


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
        print(f"    one thread per column  fwd {seq[0]:.3f} ms  bwd {seq[1]:.3f} ms  "
              f"{gbps / 1e9:.0f} GB/s = {gbps / copy:.0%} of the measured copy bandwidth")
        L = forget_mult_cuda.chunk_length(T, N)
        if L:
            scan = design(L)
            print(f"    chunked scan (L={L})  fwd {scan[0]:.3f} ms  bwd {scan[1]:.3f} ms  "
                  f"speed-up over one thread per column: {sum(seq) / sum(scan):.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-seed", action="store_true", help="skip the seed's loop (10 s at the synthesizer shape)")
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()
    if not args.gpu_only:
        cpu_rows(args.repeat, args.skip_seed)
    if torch.cuda.is_available():
        gpu_rows(args.repeat * 4)
    else:
        print("GPU: none here (CUDA rows skipped)")


if __name__ == "__main__":
    main()
