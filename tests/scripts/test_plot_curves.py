"""curves.csv from a real fairseq-train run, and examples/paper/plot_curves.py on it."""

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, TRAIN_FLAGS, records, run_cli

SCRIPT = REPO / "examples" / "paper" / "plot_curves.py"
HEADER = (
    "epoch,seconds,train_loss,valid_loss,train_ppl,valid_ppl,lr,synthetic,restart,sg_cos,sg_norm_ratio,sg_inject_ratio"
)
# as tests/test_cli_sg.py: train on the small valid split (22k tokens), validate on test
SMALL = ["--train-subset", "valid", "--valid-subset", "test"]
SG_FLAGS = ["--use-sg", "--mixture", "--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base", "1"]


def load_script():
    spec = importlib.util.spec_from_file_location("plot_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plot_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def check_png(path):
    """A readable PNG of a sensible size whose pixels are not all one colour; returns its pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 2_000_000
    pixels = matplotlib.image.imread(str(path))
    assert pixels.ndim == 3 and 300 <= pixels.shape[0] <= 2000 and 300 <= pixels.shape[1] <= 3000
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 10
    return pixels


def write_csv(path, rows, cos=None):
    """rows: (epoch, valid loss, synthetic, restart); ``cos``: the epochs' sg_cos (nan: no diagnostics)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for n, (epoch, valid_loss, synthetic, restart) in enumerate(rows):
        train_loss = valid_loss + 0.1
        c = "nan" if cos is None else cos[n]
        lines.append(
            f"{epoch},12.5,{train_loss},{valid_loss},{math.exp(train_loss)},{math.exp(valid_loss)},0.001,"
            f"{synthetic},{restart},{c},{'nan' if cos is None else 2.0},nan"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def sg_curves(sample_bin, tmp_path_factory):
    """3 epochs (the third cut short by --max-update) with synthetic gradients in epoch 2 only."""
    save = tmp_path_factory.mktemp("curves")
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        *SMALL,
        "--batch-size",
        "20",
        "--batch-size-valid",
        "10",
        "--bptt",
        "35",
        "--max-epoch",
        "3",
        "--max-update",
        "70",
        "--log-interval",
        "10",
        *SG_FLAGS,
        "--save-dir",
        save,
        "--no-epoch-checkpoints",
    )
    return save, proc.stdout + proc.stderr


@pytest.mark.slow  # a real run's curves; the default suite keeps the plots of written curves
def test_real_run_writes_one_row_per_epoch(sg_curves):
    save, log = sg_curves
    path = save / "curves.csv"
    assert path.is_file(), f"fairseq-train --task alternating_lm wrote no {path}"
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    cols = load_script().read_curves(str(save))
    assert cols["epoch"] == [1, 2, 3]
    assert cols["synthetic"] == [0, 1, 0]  # --mixture --restart-base 1: restarts after epochs 1, 2, 4
    assert cols["restart"] == [0, 1, 1]
    assert cols["lr"] == pytest.approx([2e-3, 2e-3, 2e-3])  # each epoch starts a cycle (cosine factor 1)
    assert all(s > 0 for s in cols["seconds"])
    for loss, ppl in [("valid_loss", "valid_ppl"), ("train_loss", "train_ppl")]:
        assert cols[ppl] == pytest.approx([math.exp(x) for x in cols[loss]], rel=1e-5)
    # the validation fairseq logged (base 2, on the --valid-subset 'test')
    logged = records(log, "test")
    assert [int(r["epoch"]) for r in logged] == [1, 2, 3]
    for nats, record in zip(cols["valid_loss"], logged):
        assert nats / math.log(2) == pytest.approx(float(record["test_loss"]), abs=6e-4)
        assert math.exp(nats) == pytest.approx(float(record["test_ppl"]), rel=1e-3)
    assert cols["valid_loss"][2] < cols["valid_loss"][0]
    # the epochs' synthetic-gradient diagnostics, as the training log's
    epochs = records(log, "train")
    for n, record in enumerate(epochs):
        assert cols["sg_cos"][n] == pytest.approx(float(record["train_sg_cos"]), rel=1e-4)
        assert cols["sg_norm_ratio"][n] == pytest.approx(float(record["train_sg_norm_ratio"]), rel=1e-4)
        assert -1 <= cols["sg_cos"][n] <= 1
    assert math.isfinite(cols["sg_inject_ratio"][1])  # injections in epoch 2 only
    assert math.isnan(cols["sg_inject_ratio"][0])


def series(fig):
    """{kind: [run labels]} of the plotted series (valid, train, sg_cos, sg_norm_ratio)."""
    out = {}
    for axis in fig.axes:
        for line in axis.lines:
            if line.get_gid():
                kind, label = line.get_gid().split(":", 1)
                out.setdefault(kind, []).append(label)
    return out


@pytest.mark.slow  # as above
def test_plot_of_the_real_run(sg_curves, tmp_path):
    save, _ = sg_curves
    out = tmp_path / "curves.png"
    proc = plot_cli(save, "-o", out, "--title", "sample corpus, alternating")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    check_png(out)
    plot_curves = load_script()
    fig = plot_curves.plot([plot_curves.read_curves(str(save))], ["alt"])
    assert len(fig.axes) == 3  # perplexities; sg_cos with the norm ratio on a twin axis
    assert series(fig) == {"valid": ["alt"], "train": ["alt"], "sg_cos": ["alt"], "sg_norm_ratio": ["alt"]}
    ppl_axis, cos_axis, ratio_axis = fig.axes
    assert ppl_axis.get_yscale() == "linear" and ratio_axis.get_yscale() == "log"
    assert cos_axis.get_ylim() == (-1.05, 1.05)
    assert [t.get_text() for t in ppl_axis.get_legend().get_texts()][:3] == ["alt", "validation", "training"]


def test_two_runs_from_hand_written_csvs(tmp_path):
    plot_curves = load_script()
    write_csv(
        tmp_path / "alt" / "curves.csv",
        [(e, 6 - 0.2 * e, int(e in (2, 5, 6, 7, 8)), int(e in (2, 3, 5, 9))) for e in range(1, 11)],
    )
    bptt = write_csv(tmp_path / "bptt.csv", [(e, 6.1 - 0.2 * e, 0, 0) for e in range(1, 11)])
    cols = plot_curves.read_curves(str(tmp_path / "alt"))  # a run directory stands for its curves.csv
    assert cols["epoch"] == list(range(1, 11)) and cols["synthetic"][1] == 1
    assert plot_curves._segments(cols["epoch"], cols["synthetic"]) == [[2, 2], [5, 8]]
    out = tmp_path / "two.png"
    proc = plot_cli(tmp_path / "alt", bptt, "-o", out, "--log-y")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        f"alt: 10 epochs, best valid ppl {math.exp(4):.2f} (epoch 10)",
        f"bptt: 10 epochs, best valid ppl {math.exp(4.1):.2f} (epoch 10)",
    ]
    shaded = check_png(out)
    # the same curves without synthetic epochs and restarts draw a different picture
    write_csv(tmp_path / "plain" / "curves.csv", [(e, 6 - 0.2 * e, 0, 0) for e in range(1, 11)])
    plain = tmp_path / "plain.png"
    assert plot_cli(tmp_path / "plain", bptt, "-o", plain, "--log-y", "--labels", "alt", "bptt").returncode == 0
    assert not np.array_equal(shaded, check_png(plain))
    # and the plotting function on its own, one run with a band
    plot_curves.save(plot_curves.plot([cols], labels=["alt"], title="one run"), str(tmp_path / "one.png"))
    check_png(tmp_path / "one.png")


@pytest.mark.parametrize(
    "case,content,message",
    [
        ("missing", None, "no such file"),
        ("empty", "", "empty file"),
        ("other csv", "step,loss\n1,2.0\n", "not a curves CSV: no column epoch, valid_ppl, synthetic, restart"),
        ("no rows", HEADER + "\n", "no rows"),
        (
            "not a number",
            HEADER + "\n1,3.0,5.0,5.0,148.4,148.4,0.001,0,zero,nan,nan,nan\n",
            "line 2: restart is 'zero', not a number",
        ),
        ("short row", HEADER + "\n1,3.0,5.0\n", "line 2: 3 fields, the header has 12"),
    ],
)
def test_bad_csv_gives_one_clear_line(tmp_path, case, content, message):
    path = tmp_path / "run" / "curves.csv"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    proc = plot_cli(path, "-o", tmp_path / "x.png")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plot_curves.py: error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_label_count_must_match(tmp_path):
    write_csv(tmp_path / "a" / "curves.csv", [(1, 5.0, 0, 0)])
    proc = plot_cli(tmp_path / "a", "--labels", "x", "y", "-o", tmp_path / "x.png")
    assert proc.returncode == 2 and "--labels gives 2 labels for 1 runs" in proc.stderr


def test_several_runs_a_diverged_one_and_the_scale(tmp_path):
    plot_curves = load_script()
    calm = write_csv(
        tmp_path / "calm.csv",
        [(e, 6 - 0.1 * e, int(e > 2), int(e == 3)) for e in range(1, 6)],
        cos=[0.1, 0.3, 0.5, 0.6, 0.7],
    )
    wild = write_csv(tmp_path / "wild.csv", [(1, 6.0, 0, 0), (2, 9.0, 0, 0), (3, 20.0, 0, 0)])
    runs = [plot_curves.read_curves(str(p)) for p in (calm, wild)]
    fig = plot_curves.plot(runs, ["calm", "wild"])
    assert series(fig) == {
        "valid": ["calm", "wild"],
        "train": ["calm", "wild"],
        "sg_cos": ["calm"],
        "sg_norm_ratio": ["calm"],
    }
    assert fig.axes[0].get_yscale() == "log"  # e^20 / e^5.5: a diverging run
    assert plot_curves.plot(runs[:1], ["calm"]).axes[0].get_yscale() == "linear"
    assert plot_curves.plot(runs[:1], ["calm"], scale="log").axes[0].get_yscale() == "log"
    no_diagnostics = plot_curves.plot(runs[1:], ["wild"])
    assert len(no_diagnostics.axes) == 1 and no_diagnostics.axes[0].get_yscale() == "log"
    out = tmp_path / "both.png"
    proc = plot_cli(calm, wild, "-o", out, "--labels", "calm", "wild")
    assert proc.returncode == 0, proc.stderr
    check_png(out)


def test_an_output_that_cannot_be_written(tmp_path):
    write_csv(tmp_path / "a" / "curves.csv", [(1, 5.0, 0, 0)])
    for output in ["/proc/curves.png", tmp_path / "missing" / "x.png"]:
        proc = plot_cli(tmp_path / "a", "-o", output)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("plot_curves.py: error: ") and len(proc.stderr.strip().splitlines()) == 1
