"""Session fixtures: the sample corpus binarized once, and a short trained run."""

import os
import subprocess

import pytest

from helpers import BIN, REPO, SAMPLE, TRAIN_FLAGS, run_cli


@pytest.fixture(scope="session")
def sample_bin(tmp_path_factory):
    """The bundled sample corpus, binarized by scripts/data/preprocess.sh."""
    dest = tmp_path_factory.mktemp("sample-bin")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONWARNINGS="ignore")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "data" / "preprocess.sh"), str(SAMPLE), str(dest)],
        check=True,
        env=env,
        capture_output=True,
    )
    return dest


@pytest.fixture(scope="session")
def trained(sample_bin, tmp_path_factory):
    """A few updates of a small qrnn_lm: (save dir, the training log)."""
    save = tmp_path_factory.mktemp("ckpt")
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        "--batch-size",
        "8",
        "--batch-size-valid",
        "10",
        "--bptt",
        "35",
        "--max-update",
        "6",
        "--save-dir",
        save,
    )
    return save, proc.stdout + proc.stderr
