"""Does a gloo all-reduce hide behind compute on this machine? Two workers, one thread each.

    python benchmarks/bench_allreduce_overlap.py [--numel 2400000] [--products 6] [--repeats 40]

Starts two gloo workers on 127.0.0.1 (one thread each, as bench_throughput.py's
two workers). Each times, as the mean of --repeats after a barrier:

- ``compute``: --products float32 matrix products (350 x 200 @ 200 x 10,000: the
  small configuration's tied softmax over one worker's 10 x 35 tokens);
- ``all-reduce``: a sum over both workers of --numel float32 values (the small
  configuration's 2.4M gradients);
- ``one after the other``: compute, then the all-reduce (what legacy_ddp does);
- ``overlapped``: the all-reduce started asynchronously, the compute, then the wait
  (what an all-reduce overlapped with the backward pass could at best do).

Rank 0 prints the four ms figures and how much of the all-reduce's time the
overlap hid.
"""

import argparse
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=2)
    grads = torch.randn(args.numel)
    hidden, output = torch.randn(350, 200), torch.randn(200, 10_000)

    def compute():
        for _ in range(args.products):
            hidden @ output

    def overlapped():
        handle = dist.all_reduce(grads, async_op=True)
        compute()
        handle.wait()

    def timed(step) -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.repeats):
            step()
        return 1000 * (time.perf_counter() - start) / args.repeats

    for _ in range(3):  # warm-up
        compute()
        dist.all_reduce(grads)
    ms = {
        "compute": timed(compute),
        "all-reduce": timed(lambda: dist.all_reduce(grads)),
        "one after the other": timed(lambda: (compute(), dist.all_reduce(grads))),
        "overlapped": timed(overlapped),
    }
    if rank == 0:
        print(", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
        hidden_share = (ms["one after the other"] - ms["overlapped"]) / (ms["one after the other"] - ms["compute"])
        print(f"the overlap hid {hidden_share:.0%} of what the all-reduce adds one after the other")
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numel", type=int, default=2_400_000)
    parser.add_argument("--products", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--port", type=int, default=29811)
    args = parser.parse_args()
    mp.spawn(worker, args=(args,), nprocs=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
