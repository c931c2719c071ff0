"""fairseq-train with a stopwatch on each part of the update: where a data-parallel update's time goes.

    python benchmarks/update_breakdown.py DATA [fairseq-train flags ...]

Runs fairseq-train's own entry point (``fairseq_cli.train.cli_main``) with
the same arguments, after wrapping, in this process only, the methods each
update passes through with wall-clock timers. At exit it prints one line,
``{"update_breakdown": {...}}``, with milliseconds per update:

- ``forward+backward``: the task's train_step (this worker's rows);
- ``wait+stats sync``: the first collective after the backward pass (the
  logged statistics' all-reduce), so mostly the wait for the slower worker;
- ``gradient all-reduce``: the optimizer's all_reduce_grads (legacy_ddp);
- ``repeated by every worker``: gradient scaling, clipping and the
  optimizer step, which each worker does in full on the same gradients;
- ``other``: the rest of fairseq's update (logging, metrics, iterators);
- ``update``: Trainer.train_step in all.

The first ``--skip`` updates (default 25, as bench_throughput.py) are left out.
"""

import atexit
import json
import os
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)

from fairseq_cli import train as fairseq_train  # noqa: E402  (first: it sets up fairseq-train's log format)
from fairseq import trainer as fairseq_trainer  # noqa: E402
from fairseq.optim import fairseq_optimizer  # noqa: E402

from altsg_fairseq.tasks import alternating_lm  # noqa: E402

SKIP = 25
PARTS = {
    "forward+backward": (alternating_lm.AlternatingLMTask, "train_step"),
    "wait+stats sync": (fairseq_trainer.Trainer, "_aggregate_logging_outputs"),
    "gradient all-reduce": (fairseq_optimizer.FairseqOptimizer, "all_reduce_grads"),
    "scale grads": (fairseq_optimizer.FairseqOptimizer, "multiply_grads"),
    "clip": (fairseq_trainer.Trainer, "clip_grad_norm"),
    "optimizer step": (alternating_lm.AlternatingLMTask, "optimizer_step"),
    "update": (fairseq_trainer.Trainer, "train_step"),
}
REPEATED = ("scale grads", "clip", "optimizer step")
seconds = {name: 0.0 for name in PARTS}
updates = [0]


def stopwatch(name, owner, method):
    inner = getattr(owner, method)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            if updates[0] >= SKIP:
                seconds[name] += time.perf_counter() - start
            if name == "update":
                updates[0] += 1

    setattr(owner, method, timed)


def report():
    counted = updates[0] - SKIP
    if counted <= 0:
        return
    ms = {name: 1000 * s / counted for name, s in seconds.items()}
    ms["repeated by every worker"] = sum(ms.pop(name) for name in REPEATED)
    ms["other"] = ms["update"] - sum(v for k, v in ms.items() if k != "update")
    print(json.dumps({"update_breakdown": {k: round(v, 2) for k, v in ms.items()}, "updates": counted}), flush=True)


def main():
    global SKIP
    if "--skip" in sys.argv:
        at = sys.argv.index("--skip")
        SKIP = int(sys.argv[at + 1])
        del sys.argv[at : at + 2]
    for name, (owner, method) in PARTS.items():
        stopwatch(name, owner, method)
    atexit.register(report)
    sys.argv[0] = "fairseq-train"
    fairseq_train.cli_main()


if __name__ == "__main__":
    main()
