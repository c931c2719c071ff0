"""Several CPU workers (real fairseq-train processes, gloo) and resume:
N workers == 1 worker holding all rows, resumed == straight, for the paper's
QRNN synthesizer across a phase switch; the global rows and the token position
travel in the checkpoint; torchrun works without GPUs."""

import os
import subprocess

import pytest
import torch

from helpers import (
    BIN,
    NO_DROPOUT,
    REPO,
    SHORT_EPOCHS,
    TRAIN_FLAGS,
    free_port,
    per_update,
    records,
    run_cli,
    run_workers,
)

# dropouts and noise 0: fairseq seeds every worker alike, so masks drawn per
# worker could not equal one worker's masks over all rows
EXACT = [
    "--train-subset",
    "valid",
    "--valid-subset",
    "test",
    *NO_DROPOUT,
    "--embed-dim",
    "32",
    "--hidden-dim",
    "32",
    "--bptt",
    "70",
    "--lr",
    "1e-2",
    "--log-interval",
    "1",
    "--no-epoch-checkpoints",
]
END = ["--max-update", "100"]  # into epoch 2 (an epoch is about 78 windows of 4 rows): a phase switch
SG = {
    "real": [],
    "qrnn": ["--use-sg", "--sg-type", "qrnn", "--whenswitch", "2", "--sg-noise", "0"],
    "gru": ["--use-sg", "--sg-type", "gru", "--whenswitch", "2", "--sg-noise", "0"],
}
SG["qrnn-amp"] = [*SG["qrnn"], "--amp"]  # bfloat16 autocast on the CPU
STOP = ["--max-update", "40"]  # in the middle of epoch 1


def log_of(result):
    return result.stdout + result.stderr if hasattr(result, "stdout") else result[0][1]


def weights(save):
    return torch.load(save / "checkpoint_last.pt")["model"]


@pytest.fixture(
    scope="module",
    params=[
        "qrnn",
        pytest.param("qrnn-amp", marks=pytest.mark.slow),
        pytest.param("real", marks=pytest.mark.slow),
        pytest.param("gru", marks=pytest.mark.slow),
    ],
)
def runs(request, sample_bin, tmp_path_factory):
    """The same training as 1 worker x 4 rows and 2 workers x 2 rows, straight and
    stopped mid-epoch then resumed (2 workers, or 1 worker resumed as 2)."""
    root = tmp_path_factory.mktemp(request.param)
    flags = [sample_bin, *TRAIN_FLAGS, *EXACT, *SG[request.param]]

    def resumed(name, first, then):  # stopped mid-epoch by ``first``, finished by ``then``
        first(*flags, *STOP, "--save-dir", root / name)
        return then(*flags, *END, "--save-dir", root / name)

    def one(*args):
        return run_cli("fairseq-train", *args, "--batch-size", "4")

    def two(*args):
        return run_workers(2, *args, "--batch-size", "2")

    jobs = {
        "one": lambda: one(*flags, *END, "--save-dir", root / "one"),
        "two": lambda: two(*flags, *END, "--save-dir", root / "two"),
        "two-resumed": lambda: resumed("two-resumed", two, two),
        "one-then-two": lambda: resumed("one-then-two", one, two),
    }
    out = Started(jobs)
    if "--amp" in flags:  # the scale of bfloat16's own rounding: the same run in float32
        float32 = [f for f in flags if f != "--amp"]
        out["float32"] = run_cli("fairseq-train", *float32, *END, "--batch-size", "4", "--save-dir", root / "float32")
    return root, Started({name: lambda name=name: per_update(log_of(out[name])) for name in [*jobs, *out]}), out


class Started(dict):
    """Runs (or what is read from them) by name, each done the first time a test asks for it, so that
    the default suite does only the runs its tests read."""

    def __init__(self, jobs):
        super().__init__()
        self.jobs = jobs

    def __missing__(self, name):
        self[name] = self.jobs[name]()
        return self[name]


def assert_same_model(root, run, reference):
    """The weights of ``run`` equal those of ``reference`` to float32 rounding; in bfloat16
    (a float32 run beside them), every tensor's largest and median difference are below
    those between bfloat16 and float32: bfloat16 rounds each product's result, so a
    summation order that differs in float32's last bit (another split of the rows) can
    move a rounding by one bfloat16 step, and the runs drift apart as far as, but not as
    far as, bfloat16 drifts from float32. (One worker at 1 and at 2 threads gives the
    same bits in bfloat16, so thread counts offer no scale here.)"""
    w, wr = weights(root / run), weights(root / reference)
    if not (root / "float32").exists():
        for name in w:
            if isinstance(w[name], torch.Tensor):
                torch.testing.assert_close(w[name], wr[name], rtol=1e-4, atol=2e-5, msg=name)
        return
    w32 = weights(root / "float32")
    for name in w:
        if (
            isinstance(w[name], torch.Tensor)
            and w[name].is_floating_point()
            and w[name].dim() > 0
            and not name.startswith("_")
        ):
            mine, own = (w[name] - wr[name]).abs(), (w32[name] - wr[name]).abs()
            assert mine.max() <= own.max() and mine.median() <= own.median(), (name, mine.max(), own.max())


def assert_same_updates(a, b, updates, exact=False, bf16=False):
    """The loss as logged (3 decimals) and the synthesizer's loss (6 significant digits) of every update:
    equal as printed (the same workers), or close (another summation order: float rounding grows over the
    updates, most in the synthesizer's loss, a small difference of two gradients; the weights are compared
    to more digits)."""
    for u in updates:
        if exact:
            assert a[u] == b[u], (u, a[u], b[u])
            continue
        # bfloat16: the loss to 3 bits of its 8 (0.5e-2 of ~13.7 at most), the synthesizer's loss to 5%
        assert float(a[u][0]) == pytest.approx(float(b[u][0]), abs=5e-3 if bf16 else 1.1e-3), (u, a[u], b[u])
        if a[u][1] is not None:
            assert float(a[u][1]) == pytest.approx(float(b[u][1]), rel=5e-2 if bf16 else 1e-3), (u, a[u], b[u])


def test_two_workers_equal_one_worker_holding_all_rows(runs):
    root, logs, out = runs
    one, two = logs["one"], logs["two"]
    assert sorted(one) == sorted(two) == list(range(1, 101))
    assert_same_updates(one, two, one, bf16="float32" in out)
    # the first worker (the others log warnings only) kept the one thread it was given
    line = next(line for line in log_of(out["two"]).splitlines() if "epoch 001: lr 0.01" in line)
    assert line.endswith("; 1 CPU thread"), line
    assert_same_model(root, "two", "one")  # 100 updates later: the same model, to float rounding


def test_two_workers_resumed_mid_epoch_equal_straight(runs):
    root, logs, out = runs
    straight, resumed = logs["two"], logs["two-resumed"]
    assert min(resumed) == 41 and max(resumed) == 100  # the rest of epoch 1, then epoch 2 (a phase switch)
    assert_same_updates(straight, resumed, resumed, exact=True)
    w, wr = weights(root / "two"), weights(root / "two-resumed")
    assert all(torch.equal(w[k], wr[k]) for k in w if isinstance(w[k], torch.Tensor))  # bit for bit
    log = log_of(out["two-resumed"])
    assert "of each of the 4 rows of 'valid' (window 41)" in log
    if "synthetic gradients" in log:  # --use-sg: synthetic from epoch 2 (--whenswitch 2)
        assert (
            "epoch 001: lr 0.01, synthetic gradients off" in log and "epoch 002: lr 0.01, synthetic gradients on" in log
        )


@pytest.mark.slow  # the default suite keeps 2 workers == 1 and their exact resume
def test_one_worker_resumed_as_two_equals_one_straight(runs):
    root, logs, out = runs
    assert min(logs["one-then-two"]) == 41
    assert_same_updates(logs["one"], logs["one-then-two"], logs["one-then-two"], bf16="float32" in out)
    assert_same_model(root, "one-then-two", "one")


def test_the_checkpoint_holds_every_row_and_the_token_position(sample_bin, tmp_path):
    flags = [
        sample_bin,
        *TRAIN_FLAGS,
        *EXACT,
        *SG["qrnn"],
        "--batch-size",
        "2",
        "--max-update",
        "5",
        "--save-dir",
        tmp_path,
        "--disable-validation",
    ]
    run_workers(2, *flags)
    state = torch.load(tmp_path / "checkpoint_last.pt")  # PyTorch's default safe loading
    iterator, extra = state["extra_state"]["train_iterator"], state["model"]["_extra_state"]
    assert iterator["iterations_in_epoch"] == 5 and iterator["rows"] == 4 and iterator["bptt"] == 70
    assert 5 * 60 < iterator["position"] < 5 * 80  # windows of about 70 tokens
    assert [t.size(0) for t in extra["carried"][0] if t is not None] == [4, 4]  # cells and previous inputs of 4 rows
    assert not torch.equal(extra["carried"][0][0][:2], extra["carried"][0][0][2:])  # both workers' rows


@pytest.mark.slow  # the default suite keeps 2 workers == 1
def test_changed_bptt_continues_at_the_same_token_and_changed_rows_stop(sample_bin, tmp_path):
    flags = [
        sample_bin,
        *TRAIN_FLAGS,
        "--train-subset",
        "valid",
        "--valid-subset",
        "test",
        "--embed-dim",
        "16",
        "--hidden-dim",
        "16",
        "--batch-size",
        "10",
        "--save-dir",
        tmp_path,
    ]
    run_cli("fairseq-train", *flags, "--bptt", "30", "--max-update", "10")
    stopped = torch.load(tmp_path / "checkpoint_last.pt")["extra_state"]["train_iterator"]
    proc = run_cli("fairseq-train", *flags, "--bptt", "15", "--max-update", "11")
    log = proc.stdout + proc.stderr
    assert f"resuming epoch 1 at token {stopped['position']:,} of each of the 10 rows" in log
    assert "windows of --bptt 15 (was 30)" in log and "resuming with changed flags: --bptt 30 -> 15" in log
    after = torch.load(tmp_path / "checkpoint_last.pt")["extra_state"]["train_iterator"]
    assert 5 <= after["position"] - stopped["position"] <= 30  # one window of about 15 tokens, from there
    proc = run_cli("fairseq-train", *flags, "--bptt", "15", "--batch-size", "6", "--max-update", "12", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error: the checkpoint stopped in the middle of epoch 1 with 10 rows")
    assert "this run has 6" in last and "--reset-dataloader" in last


@pytest.mark.slow  # the default suite keeps 2 workers == 1
def test_changed_flags_are_reported_and_curves_kept_apart(sample_bin, tmp_path):
    flags = [
        sample_bin,
        *TRAIN_FLAGS,
        *SHORT_EPOCHS,
        *["--embed-dim", "16", "--hidden-dim", "16", "--batch-size", "10", "--bptt", "70"],
        "--save-dir",
        tmp_path,
    ]
    run_cli("fairseq-train", *flags, "--max-epoch", "1")
    proc = run_cli("fairseq-train", *flags, "--max-epoch", "2", "--lr", "5e-4", "--use-sg")
    warning = next(line for line in (proc.stdout + proc.stderr).splitlines() if "resuming with changed flags" in line)
    assert "--use-sg False -> True" in warning and "--lr [0.002] -> [0.0005]" in warning
    assert "curves.previous-1.csv" in warning
    assert (tmp_path / "curves.previous-1.csv").read_text().splitlines()[1].startswith("1,")
    assert [line.split(",")[0] for line in (tmp_path / "curves.csv").read_text().splitlines()[1:]] == ["2"]
    proc = run_cli(
        "fairseq-train", *flags, "--max-epoch", "2", "--lr", "5e-4", "--use-sg", "--hidden-dim", "24", check=False
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "altsg_fairseq: error: the checkpoint's model is not this one" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # the default suite keeps 2 workers == 1
def test_torchrun_on_cpus_equals_the_hand_launch(sample_bin, tmp_path):
    flags = [
        sample_bin,
        *TRAIN_FLAGS,
        *EXACT,
        *SG["qrnn"],
        "--batch-size",
        "2",
        "--max-update",
        "6",
        "--disable-validation",
    ]
    hand = per_update(run_workers(2, *flags, "--save-dir", tmp_path / "hand")[0][1])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(BIN / "fairseq-train"),
            *map(str, flags),
            "--save-dir",
            str(tmp_path / "torchrun"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "torchrun without GPUs: 2 workers on the CPU" in log
    assert all(r["bsz"] == "4" for r in records(log, "train_inner"))  # one job of 2 x 2 rows
    assert per_update(log) == hand
