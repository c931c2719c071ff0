"""examples/paper/study.py: configurations x seeds, resumable, mean +- std."""

import shlex
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = REPO / "examples" / "paper" / "study.py"


def study(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_configurations_isolate_restarts_from_synthetic_gradients(tmp_path):
    out = study("--corpus", "sample", "--out", tmp_path, "--seeds", "1", "2", "--dry-run").stdout.strip().splitlines()
    commands = {}
    for line in out:
        argv = shlex.split(line)
        save = argv[argv.index("--save-dir") + 1]
        commands[save.replace(str(tmp_path) + "/", "")] = argv
    assert sorted(commands) == sorted(
        f"{c}/seed{s}" for c in ["bptt", "bptt-restarts", "dni", "dni-restarts", "alt-restarts"] for s in (1, 2)
    )

    def has(name, *flags):
        argv = commands[f"{name}/seed1"]
        return all(f in argv for f in flags)

    restarts = ("--lr-scheduler", "warm_restarts", "--restart-lr", "--restart-base")
    assert not has("bptt", "--use-sg") and not has("bptt", "--restart-lr")
    assert has("bptt-restarts", *restarts) and not has("bptt-restarts", "--use-sg")  # the control
    assert has("dni", "--use-sg", "--whenswitch") and not has("dni", "--restart-lr")
    assert has("dni-restarts", "--use-sg", *restarts) and not has("dni-restarts", "--mixture")
    assert has("alt-restarts", "--use-sg", "--mixture", *restarts)
    for argv in commands.values():  # the same restarts, epochs and model everywhere
        assert argv[argv.index("--max-epoch") + 1] == "32" and argv[argv.index("--arch") + 1] == "qrnn_lm"
        if "--restart-base" in argv:
            assert argv[argv.index("--restart-base") + 1] == "4"
    assert commands["dni/seed2"][commands["dni/seed2"].index("--seed") + 1] == "2"


@pytest.mark.slow
def test_a_small_study_runs_resumes_and_summarises(tmp_path):
    flags = [
        "--corpus",
        "sample",
        "--out",
        tmp_path,
        "--configs",
        "bptt",
        "dni",
        "--seeds",
        "1",
        "2",
        "--epochs",
        "1",
        "--embed-dim",
        "16",
        "--hidden-dim",
        "16",
        "--jobs",
        "2",
    ]
    first = study(*flags)
    table = [line for line in first.stdout.splitlines() if line.startswith("| bptt") or line.startswith("| dni")]
    assert len(table) == 2 and all(" +- " in line for line in table)
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "dni" / "mean.csv").is_file()
    again = study(*flags)  # a finished study is not rerun
    assert "started" not in again.stdout and table == [line for line in again.stdout.splitlines() if line in table]
