"""Plot the learning curves of one or more runs from their curves.csv.

    python examples/paper/plot_curves.py RUN_DIR_OR_CSV [...] -o curves.png [--labels a b] [--title T]
        [--y-scale auto|log|linear]

Each argument is a run's --save-dir (holding the curves.csv that
``--task alternating_lm`` writes) or the CSV itself; its header is
``epoch,seconds,train_loss,valid_loss,train_ppl,valid_ppl,lr,synthetic,restart``
and, since the synthetic-gradient diagnostics, ``sg_cos,sg_norm_ratio,sg_inject_ratio``.

The top panel draws each run's validation perplexity (solid) and training
perplexity (dashed) per epoch in the run's colour (legend: --labels, else the
run directory's name). Epochs with synthetic gradients are shaded: a band in
the run's colour for one run, a strip per run along the bottom for several;
epochs that begin a warm-restart cycle get a dashed vertical line. The
perplexity axis is logarithmic when the curves span more than a factor of 20
(a diverging run, say), linear otherwise (``--y-scale`` chooses). When the
runs logged synthetic-gradient diagnostics, a second panel draws, per epoch,
the cosine between the synthesizer's prediction and the true gradient
(``sg_cos``, solid, left axis) and the ratio of their norms
(``sg_norm_ratio``, dotted, right axis, logarithmic). Writes one PNG
(matplotlib, Agg backend).
"""

import argparse
import csv
import math
import os
import sys

COLUMNS = [
    "epoch",
    "seconds",
    "train_loss",
    "valid_loss",
    "train_ppl",
    "valid_ppl",
    "lr",
    "synthetic",
    "restart",
    "sg_cos",
    "sg_norm_ratio",
    "sg_inject_ratio",
]
REQUIRED = ["epoch", "valid_ppl", "synthetic", "restart"]
LOG_SPAN = 20.0  # the auto scale turns logarithmic when max / min perplexity exceeds this


class CurvesError(Exception):
    """A missing or malformed curves CSV, or an output that cannot be written (the message is one line)."""


def csv_path(path: str) -> str:
    """The CSV of a run directory, or the path itself."""
    return os.path.join(path, "curves.csv") if os.path.isdir(path) else path


def default_label(path: str) -> str:
    """The run directory's name (the CSV's directory for a CSV path)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        name = os.path.basename(path)
        parent = os.path.basename(os.path.dirname(path))
        return parent if name == "curves.csv" and parent else os.path.splitext(name)[0]
    return os.path.basename(path.rstrip(os.sep))


def _number(text: str, path: str, line: int, column: str) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise CurvesError(f"{path}, line {line}: {column} is {text!r}, not a number") from None


def read_curves(path: str) -> dict:
    """Columns of a curves CSV as lists of floats ({name: [...]}), rows by epoch."""
    path = csv_path(path)
    if not os.path.isfile(path):
        raise CurvesError(f"{path}: no such file (train with --task alternating_lm: it writes <save-dir>/curves.csv)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise CurvesError(f"{path}: empty file, expected the header {','.join(COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CurvesError(
                f"{path}: not a curves CSV: no column {', '.join(missing)} in the header (expected {','.join(COLUMNS)})"
            )
        columns = {name: [] for name in header}
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise CurvesError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            for name, cell in zip(header, row):
                columns[name].append(_number(cell, path, line, name))
    if not columns["epoch"]:
        raise CurvesError(f"{path}: no rows (no epoch has finished yet?)")
    if any(math.isnan(e) for e in columns["epoch"]):
        raise CurvesError(f"{path}: a row has no epoch")
    order = sorted(range(len(columns["epoch"])), key=lambda i: columns["epoch"][i])
    return {name: [values[i] for i in order] for name, values in columns.items()}


def _segments(epochs, flags):
    """Contiguous (first, last) epochs where flags is on."""
    out = []
    for e, on in zip(epochs, flags):
        if on == 1:
            if out and out[-1][1] == e - 1:
                out[-1][1] = e
            else:
                out.append([e, e])
    return out


def _finite(values):
    return [v for v in values if v is not None and math.isfinite(v) and v > 0]


def choose_log_scale(runs, scale: str = "auto") -> bool:
    """Whether the perplexity axis is logarithmic: "log", "linear", or "auto" (a span over LOG_SPAN, or a run
    whose perplexity is not finite, as when it diverged)."""
    if scale != "auto":
        return scale == "log"
    values = [v for cols in runs for key in ("valid_ppl", "train_ppl") for v in cols.get(key, [])]
    finite = _finite(values)
    diverged = any(not math.isnan(v) and not math.isfinite(v) for v in values)
    return diverged or (bool(finite) and max(finite) / min(finite) > LOG_SPAN)


def has_diagnostics(runs) -> bool:
    return any(_finite([abs(v) for v in cols.get("sg_cos", [])]) for cols in runs)


def plot(runs, labels=None, title=None, scale: str = "auto"):
    """The figure of the runs (columns from read_curves, one per run, named by ``labels``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import LogFormatter

    labels = labels or [f"run {i + 1}" for i in range(len(runs))]
    several = len(runs) > 1
    diagnostics = has_diagnostics(runs)
    log_y = choose_log_scale(runs, scale)
    if diagnostics:
        fig, (ax, dx) = plt.subplots(2, 1, figsize=(8, 7), dpi=100, sharex=True, height_ratios=[3, 2])
    else:
        fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    strip = 0.025  # height of one run's synthetic strip, in axes fractions
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shaded = restarted = False
    for i, (label, cols) in enumerate(zip(labels, runs)):
        colour = colours[i % len(colours)]
        epochs = cols["epoch"]
        marker = "o" if len(epochs) <= 40 else None
        ax.plot(
            epochs,
            cols["valid_ppl"],
            marker=marker,
            markersize=3,
            color=colour,
            label=label,
            zorder=3,
            gid=f"valid:{label}",
        )
        if "train_ppl" in cols:
            ax.plot(
                epochs,
                cols["train_ppl"],
                linestyle="--",
                linewidth=1,
                color=colour,
                alpha=0.8,
                zorder=3,
                gid=f"train:{label}",
            )
        for first, last in _segments(epochs, cols["synthetic"]):
            shaded = True
            if several:
                ax.axvspan(
                    first - 0.5,
                    last + 0.5,
                    ymin=i * strip,
                    ymax=(i + 1) * strip,
                    color=colour,
                    alpha=0.8,
                    linewidth=0,
                    zorder=2,
                )
            else:
                for axis in [ax, dx] if diagnostics else [ax]:
                    axis.axvspan(first - 0.5, last + 0.5, color=colour, alpha=0.15, linewidth=0, zorder=1)
        for e, r in zip(epochs[1:], cols["restart"][1:]):  # the first epoch starts training, not a restart
            if r == 1:
                restarted = True
                for axis in [ax, dx] if diagnostics else [ax]:
                    axis.axvline(e - 0.5, color=colour, linestyle="--", linewidth=0.9, alpha=0.7, zorder=2)
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers, minor ticks labelled on short ranges
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    if shaded and several:  # room below the lowest point for the strips
        f = len(runs) * strip + 0.02
        lo, hi = ax.get_ylim()
        if log_y:
            ax.set_ylim(10 ** ((math.log10(lo) - f * math.log10(hi)) / (1 - f)), hi)
        else:
            ax.set_ylim((lo - f * hi) / (1 - f), hi)
    handles, names = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey"), Line2D([], [], color="grey", linestyle="--", linewidth=1)]
    names += ["validation", "training"]
    if shaded:
        handles.append(Patch(color="grey" if several else colours[0], alpha=0.8 if several else 0.15))
        names.append("synthetic gradients" + (" (strips, one per run)" if several else ""))
    if restarted:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.9, alpha=0.7))
        names.append("warm restart")
    ax.legend(handles, names, loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_ylabel("perplexity" + (" (log scale)" if log_y else ""))
    ax.set_title(title or "perplexity per epoch")
    ax.grid(True, alpha=0.3)
    if diagnostics:
        _plot_diagnostics(dx, runs, labels, colours)
    (dx if diagnostics else ax).set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def _plot_diagnostics(dx, runs, labels, colours):
    """sg_cos (left axis) and sg_norm_ratio (right axis, log) per epoch."""
    from matplotlib.lines import Line2D

    ratio_axis = dx.twinx()
    ratio_axis.set_yscale("log")
    for i, cols in enumerate(runs):
        if not _finite([abs(v) for v in cols.get("sg_cos", [])]):
            continue
        colour = colours[i % len(colours)]
        dx.plot(
            cols["epoch"],
            cols["sg_cos"],
            color=colour,
            marker="o" if len(cols["epoch"]) <= 40 else None,
            markersize=3,
            label=labels[i],
            gid=f"sg_cos:{labels[i]}",
        )
        ratio_axis.plot(
            cols["epoch"],
            cols.get("sg_norm_ratio", [math.nan] * len(cols["epoch"])),
            color=colour,
            linestyle=":",
            linewidth=1.2,
            gid=f"sg_norm_ratio:{labels[i]}",
        )
    dx.axhline(0, color="grey", linewidth=0.6)
    dx.set_ylim(-1.05, 1.05)
    dx.set_ylabel("cosine(prediction, true gradient)")
    ratio_axis.set_ylabel("norm ratio |prediction| / |true|")
    dx.legend(
        [Line2D([], [], color="grey"), Line2D([], [], color="grey", linestyle=":")],
        ["sg_cos (left)", "sg_norm_ratio (right)"],
        loc="lower right",
        fontsize=8,
        framealpha=0.9,
    )
    dx.set_title("synthetic-gradient diagnostics (training, per epoch)", fontsize=10)
    dx.grid(True, alpha=0.3)


def save(fig, output: str) -> None:
    """Write the figure as a PNG; one line when the output cannot be written."""
    import matplotlib.pyplot as plt

    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise CurvesError(f"{out_dir}: no such directory for the output")
    try:
        fig.savefig(output, format="png")
    except OSError as e:
        raise CurvesError(f"cannot write {output} ({e.strerror or e}): choose another -o") from None
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR_OR_CSV",
        help="a run's --save-dir (with curves.csv) or a curves CSV; several for one line each",
    )
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--labels", nargs="+", help="legend labels, one per run (default: the run directories' names)")
    parser.add_argument("--title", help="plot title")
    parser.add_argument(
        "--y-scale",
        choices=["auto", "log", "linear"],
        default="auto",
        help=f"perplexity axis: auto is logarithmic when the curves span more than a factor of "
        f"{LOG_SPAN:g} or a run diverged (default: auto)",
    )
    parser.add_argument("--log-y", action="store_true", help="the same as --y-scale log")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels gives {len(args.labels)} labels for {len(args.runs)} runs")
    labels = args.labels or [default_label(path) for path in args.runs]
    try:
        runs = [read_curves(path) for path in args.runs]
        save(plot(runs, labels, args.title, "log" if args.log_y else args.y_scale), args.output)
    except CurvesError as e:
        print(f"plot_curves.py: error: {e}", file=sys.stderr)
        return 2
    for label, cols in zip(labels, runs):
        ppl = [(p, e) for p, e in zip(cols["valid_ppl"], cols["epoch"]) if not math.isnan(p)]
        best = f"best valid ppl {min(ppl)[0]:.2f} (epoch {min(ppl)[1]:g})" if ppl else "no valid ppl"
        print(f"{label}: {len(cols['epoch'])} epochs, {best}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
