"""The device check cannot pass without a GPU, and its training part runs (on a CPU,
at toy sizes: the same code the GPU machine runs at the paper's)."""

import subprocess
import sys

import pytest
import torch

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check runs for real there")
def test_without_a_gpu_the_check_fails_in_one_line(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable},
        timeout=120,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU: torch.cuda.is_available() is False"), lines
    assert (tmp_path / "report.txt").read_text().strip() == lines[0]  # the report says the same


def test_without_torch_the_check_fails_in_one_line(tmp_path):
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nexec /usr/bin/env python3 -I -S -c \'import sys; sys.exit("no torch")\' "$@"\n')
    python.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PYTHON": str(python)},
        timeout=60,
    )
    assert proc.returncode != 0 and (proc.stdout + proc.stderr).strip().splitlines() == [
        f"gpu_check: no torch: {python} cannot import it"
    ]


@pytest.mark.parametrize("mode", ["fp32", "amp", "fp16"])
def test_the_training_check_passes_on_a_toy_model(mode, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REPORT", str(tmp_path / "report.txt"))
    gpu_check.training(mode, 3, device="cpu", sizes=(50, 8, 12, 4), rows=3, bptt=5)
    lines = (tmp_path / "report.txt").read_text().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [
        f"{mode} window {w} ({kind})" for w, kind in [(1, "real"), (2, "synthetic"), (3, "synthetic")]
    ]


def test_the_training_check_fails_when_the_synthesizer_gets_no_gradient(tmp_path, monkeypatch):
    """What the check exists for: a synthesizer whose input map and core learn nothing (as when its
    target underflows under float16 autocast) stops it with one line."""
    from altsg_fairseq.dni import synthetic_gradient

    backward = synthetic_gradient.TrainSynthesizer.backward

    def starved(ctx, grad_state, grad_probe):
        out = backward(ctx, grad_state, grad_probe)
        return (out[0], torch.zeros_like(out[1]), *out[2:])

    monkeypatch.setattr(synthetic_gradient.TrainSynthesizer, "backward", staticmethod(starved))
    monkeypatch.setattr(gpu_check, "REPORT", None)
    with pytest.raises(gpu_check.CheckFailed, match="fp32 window 2: synthesizer parameters with zero gradient"):
        gpu_check.training("fp32", 3, device="cpu", sizes=(50, 8, 12, 4), rows=3, bptt=5)


def pytest_of(tmp_path, body):
    """Real ``pytest -q -rs -m cuda`` output on a test file holding ``body``."""
    (tmp_path / "test_some_gpu.py").write_text("import pytest\n\n" + body)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    cuda: needs a GPU\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-m", "cuda", "test_some_gpu.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


PASSES = "@pytest.mark.cuda\ndef test_a():\n    pass\n\n"
SKIPS = "@pytest.mark.cuda\n@pytest.mark.skipif(True, reason='needs a CUDA GPU')\ndef test_b():\n    pass\n\n"
FAILS = "@pytest.mark.cuda\ndef test_c():\n    assert False\n\n"


def test_the_gpu_tests_pass_only_when_all_ran_and_passed(tmp_path):
    assert gpu_check.judge_tests(*pytest_of(tmp_path, PASSES)) == "GPU tests: 1 passed, none skipped"


@pytest.mark.parametrize(
    "body,why",
    [
        (PASSES + SKIPS, "1 skipped, first: SKIPPED"),
        (PASSES + FAILS, "exit 1"),
        (SKIPS, "exit 0, 1 skipped"),
        ("", "exit 5"),
    ],
)
def test_a_skipped_failed_or_missing_gpu_test_fails_the_check(tmp_path, body, why):
    with pytest.raises(gpu_check.CheckFailed, match=why) as failed:
        gpu_check.judge_tests(*pytest_of(tmp_path, body))
    assert "\n" not in str(failed.value)


def test_the_gpu_tests_are_found_by_their_mark():
    files = gpu_check.gpu_test_files(str(REPO / "tests"))
    assert str(REPO / "tests" / "unit" / "test_forget_mult.py") in files
    assert str(REPO / "tests" / "scripts" / "test_gpu_check.py") not in files  # its marks are in strings
