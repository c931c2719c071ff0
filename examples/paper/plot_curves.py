"""Plot validation perplexity per epoch from the curves.csv of one or more runs.

    python examples/paper/plot_curves.py RUN_DIR_OR_CSV [...] -o curves.png [--labels a b] [--title T] [--log-y]

Each argument is a run's --save-dir (holding the curves.csv that
``--task alternating_lm`` writes) or the CSV itself; its header is
``epoch,seconds,train_loss,valid_loss,train_ppl,valid_ppl,lr,synthetic,restart``.
One line per run (legend: --labels, else the run directory's name). Epochs
with synthetic gradients are shaded: a translucent band in the run's colour
for one run, a thin strip per run along the bottom of the plot for several.
Epochs that begin a warm-restart cycle get a dashed vertical line in the
run's colour at their left edge. Writes one PNG (matplotlib, Agg backend).
"""

import argparse
import csv
import math
import os
import sys

COLUMNS = ["epoch", "seconds", "train_loss", "valid_loss", "train_ppl", "valid_ppl", "lr", "synthetic", "restart"]
REQUIRED = ["epoch", "valid_ppl", "synthetic", "restart"]


class CurvesError(Exception):
    """A missing or malformed curves CSV (the message is one line)."""


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
            raise CurvesError(f"{path}: not a curves CSV: no column {', '.join(missing)} in the header "
                              f"(expected {','.join(COLUMNS)})")
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


def plot(runs, output: str, labels=None, title=None, log_y=False) -> None:
    """Draw the runs (columns from read_curves, one per run, named by ``labels``) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import LogFormatter

    labels = labels or [f"run {i + 1}" for i in range(len(runs))]
    several = len(runs) > 1
    strip = 0.025  # height of one run's synthetic strip, in axes fractions
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shaded = restarted = False
    for i, (label, cols) in enumerate(zip(labels, runs)):
        colour = colours[i % len(colours)]
        epochs = cols["epoch"]
        ax.plot(epochs, cols["valid_ppl"], marker="o" if len(epochs) <= 40 else None, markersize=3,
                color=colour, label=label, zorder=3)
        for first, last in _segments(epochs, cols["synthetic"]):
            shaded = True
            if several:
                ax.axvspan(first - 0.5, last + 0.5, ymin=i * strip, ymax=(i + 1) * strip, color=colour, alpha=0.8,
                           linewidth=0, zorder=2)
            else:
                ax.axvspan(first - 0.5, last + 0.5, color=colour, alpha=0.15, linewidth=0, zorder=1)
        for e, r in zip(epochs[1:], cols["restart"][1:]):  # the first epoch starts training, not a restart
            if r == 1:
                restarted = True
                ax.axvline(e - 0.5, color=colour, linestyle="--", linewidth=0.9, alpha=0.7, zorder=2)
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
    if shaded:
        handles.append(Patch(color="grey" if several else colours[0], alpha=0.8 if several else 0.15))
        names.append("synthetic gradients" + (" (strips, one per run)" if several else ""))
    if restarted:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.9))
        names.append("warm restart")
    ax.legend(handles, names, loc="upper right", fontsize=9, framealpha=0.9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_title(title or "validation perplexity per epoch")
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(output, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_CSV",
                        help="a run's --save-dir (with curves.csv) or a curves CSV; several for one line each")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--labels", nargs="+", help="legend labels, one per run (default: the run directories' names)")
    parser.add_argument("--title", help="plot title")
    parser.add_argument("--log-y", action="store_true", help="logarithmic perplexity axis")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels gives {len(args.labels)} labels for {len(args.runs)} runs")
    try:
        runs = [read_curves(path) for path in args.runs]
    except CurvesError as e:
        print(f"plot_curves.py: error: {e}", file=sys.stderr)
        return 2
    labels = args.labels or [default_label(path) for path in args.runs]
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        print(f"plot_curves.py: error: {out_dir}: no such directory for the output", file=sys.stderr)
        return 2
    plot(runs, args.output, labels, args.title, args.log_y)
    for label, cols in zip(labels, runs):
        ppl = [(p, e) for p, e in zip(cols["valid_ppl"], cols["epoch"]) if not math.isnan(p)]
        best = f"best valid ppl {min(ppl)[0]:.2f} (epoch {min(ppl)[1]:g})" if ppl else "no valid ppl"
        print(f"{label}: {len(cols['epoch'])} epochs, {best}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
