import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_corpus"
BIN = Path(sys.executable).parent


def run_cli(tool, *args, cwd=None, check=True, env=None, input=None):
    """Run one of fairseq's console scripts from this venv; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(
        [str(BIN / tool), *map(str, args)], cwd=cwd or REPO, env=full_env,
        capture_output=True, text=True, input=input,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def sample_bin(tmp_path_factory):
    """The bundled sample corpus, binarized by scripts/preprocess.sh."""
    dest = tmp_path_factory.mktemp("sample-bin")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONWARNINGS="ignore")
    subprocess.run(["bash", str(REPO / "scripts" / "preprocess.sh"), str(SAMPLE), str(dest)],
                   check=True, env=env, capture_output=True)
    return dest


TRAIN_FLAGS = [
    "--user-dir", REPO / "altsg_fairseq", "--task", "alternating_lm", "--arch", "qrnn_lm",
    "--criterion", "synthetic_gradient_lm", "--optimizer", "adam", "--lr", "2e-3",
    "--clip-norm", "0.25", "--cpu", "--log-format", "json", "--log-interval", "1",
    "--embed-dim", "64", "--hidden-dim", "64", "--seed", "3", "--no-progress-bar",
]


@pytest.fixture(scope="session")
def trained(sample_bin, tmp_path_factory):
    """A few updates of a small qrnn_lm: (save dir, the training log)."""
    save = tmp_path_factory.mktemp("ckpt")
    proc = run_cli("fairseq-train", sample_bin, *TRAIN_FLAGS, "--batch-size", "8", "--batch-size-valid", "10",
                   "--bptt", "35", "--max-update", "6", "--save-dir", save)
    return save, proc.stdout + proc.stderr
