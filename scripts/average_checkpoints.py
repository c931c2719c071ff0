#!/usr/bin/env python
"""Average the weights of several checkpoints of one model (fairseq-train's .pt files): a checkpoint to evaluate.

    python scripts/average_checkpoints.py --inputs A.pt B.pt [C.pt ...] --output AVERAGED.pt
    python scripts/average_checkpoints.py --inputs SAVE_DIR --last 5 --output AVERAGED.pt

Every floating-point weight of the model is the mean of the inputs' (summed
in float64, then stored in the weight's own type); everything else (the
configuration, the run state the plugin keeps beside the weights: carried
rows, synthesizer; the optimizer and the data position) is the last input's,
as fairseq's own scripts/average_checkpoints.py does. That script stops on
this plugin's checkpoints ("'dict' object has no attribute 'clone'"): their
model state holds the run state as a dictionary, not only tensors.

With a save dir and --last N, the inputs are its last N epoch checkpoints
(checkpoint1.pt, checkpoint2.pt, ...). Evaluate the result with
``fairseq-eval-lm DATA --path AVERAGED.pt ...``. Inputs that are not one model
(other weights, shapes or non-float values) stop with one line.
"""

import argparse
import re
import sys
from pathlib import Path

import torch

EXTRA_STATE = "_extra_state"  # the model's run state (tasks/training_state.py), not a weight


class AverageError(Exception):
    """A mistake in the arguments or files (the message is one line)."""


def inputs_of(paths, last):
    """The checkpoint files: the given files, or a save dir's last ``last`` epoch checkpoints."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        if not last:
            raise AverageError(f"{paths[0]} is a folder: give --last N to average its last N epoch checkpoints")
        epochs = sorted(
            (int(m.group(1)), p)
            for p in Path(paths[0]).glob("checkpoint*.pt")
            if (m := re.fullmatch(r"checkpoint(\d+)\.pt", p.name))
        )
        if len(epochs) < last:
            raise AverageError(f"{paths[0]} holds {len(epochs)} epoch checkpoints, fewer than --last {last}")
        return [p for _, p in epochs[-last:]]
    if last:
        raise AverageError("--last N takes one save dir as --inputs")
    for path in paths:
        if not Path(path).is_file():
            raise AverageError(f"{path}: no such checkpoint file")
    return [Path(p) for p in paths]


def load(path):
    """A checkpoint as fairseq-train wrote it, under PyTorch's default safe loading (fairseq's own
    loader would turn its configuration into omegaconf objects, which a safe load of the averaged
    file could not read); one line when unreadable."""
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:  # a truncated or foreign file
        raise AverageError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise AverageError(f"{path} is not a fairseq checkpoint (no model weights in it)")
    if not all(torch.is_tensor(v) for k, v in state["model"].items() if k != EXTRA_STATE):
        raise AverageError(f"{path}: its model state holds values that are not tensors")
    return state


def average(states):
    """The last state with the mean of every floating-point model weight over ``states``."""
    models = [s["model"] for s in states]
    names = set(models[0]) - {EXTRA_STATE}
    for path_index, model in enumerate(models[1:], 1):
        if set(model) - {EXTRA_STATE} != names:
            raise AverageError(f"input {path_index + 1} has other weights than input 1: not the same model")
    averaged = {}
    for name in sorted(names):
        values = [m[name] for m in models]
        first = values[0]
        if any(v.shape != first.shape or v.dtype != first.dtype for v in values):
            raise AverageError(f"{name}: shapes or types differ between the inputs: not the same model")
        if first.is_floating_point():
            total = torch.zeros(first.shape, dtype=torch.float64)
            for v in values:
                total += v.to(torch.float64)
            averaged[name] = (total / len(values)).to(first.dtype)
        elif all(torch.equal(v, first) for v in values):
            averaged[name] = first
        else:
            raise AverageError(f"{name}: a non-float value that differs between the inputs cannot be averaged")
    result = dict(states[-1])
    result["model"] = {**averaged, **({EXTRA_STATE: models[-1][EXTRA_STATE]} if EXTRA_STATE in models[-1] else {})}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", nargs="+", required=True, help="checkpoint files, or one save dir with --last")
    parser.add_argument("--last", type=int, default=0, help="with a save dir: average its last N epoch checkpoints")
    parser.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.last < 0:
            raise AverageError(f"--last {args.last}: give a number of checkpoints, 1 or more")
        paths = inputs_of(args.inputs, args.last)
        if len(paths) < 1:
            raise AverageError("no inputs")
        state = average([load(p) for p in paths])
    except AverageError as e:
        print(f"average_checkpoints.py: error: {e}", file=sys.stderr)
        return 1
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
