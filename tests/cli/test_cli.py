"""The real fairseq command-line tools, end to end on the sample corpus."""

import math
import re

import pytest

from helpers import REPO, TRAIN_FLAGS, records, run_cli

from altsg_fairseq.modules import forget_mult_cuda

CUDA_KERNELS = forget_mult_cuda.available()  # a GPU and a CuPy that imports


def eval_lm(data, checkpoint, *args):
    proc = run_cli(
        "fairseq-eval-lm",
        data,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        checkpoint,
        "--cpu",
        *args,
    )
    out = proc.stdout + proc.stderr
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", out).group(1))
    tokens = int(re.search(r"Evaluated ([0-9,]+) tokens", out).group(1).replace(",", ""))
    return loss, tokens


def test_train_logs_falling_loss(trained):
    _, log = trained
    steps = records(log, "train_inner")
    assert len(steps) == 6
    assert all(math.isfinite(float(s["loss"])) for s in steps)
    assert float(steps[-1]["nll_loss"]) < float(steps[0]["nll_loss"])


def test_eval_lm_matches_validation_of_training(trained, sample_bin):
    save, log = trained
    valid = records(log, "valid")[-1]
    loss, tokens = eval_lm(
        sample_bin, save / "checkpoint_last.pt", "--gen-subset", "valid", "--batch-size", "10", "--bptt", "35"
    )
    assert abs(loss - float(valid["valid_nll_loss"])) < 1e-3
    n = 21945  # tokens of the sample's valid split (words + one eos per line)
    assert tokens == 10 * (n // 10 - 1)


@pytest.mark.slow  # eval-lm's own checks stay in the default suite
def test_eval_lm_batch_sizes_differ_only_at_row_boundaries(trained, sample_bin):
    save, _ = trained
    one, n1 = eval_lm(
        sample_bin, save / "checkpoint_last.pt", "--gen-subset", "valid", "--batch-size", "1", "--bptt", "35"
    )
    ten, n10 = eval_lm(
        sample_bin, save / "checkpoint_last.pt", "--gen-subset", "valid", "--batch-size", "10", "--bptt", "35"
    )
    assert n1 == 21945 - 1 and n1 - n10 < 20
    assert abs(one - ten) < 0.02


def test_checkpoint_loads_with_default_torch_load(trained):
    """PyTorch's default weights_only unpickler, in a process without the plugin."""
    save, _ = trained
    import subprocess
    import sys

    code = f"import torch; s = torch.load({str(save / 'checkpoint_last.pt')!r}); print(sorted(s))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "model" in out


@pytest.mark.parametrize(
    "case,args,message",
    [
        (
            "missing data",
            ["/nonexistent/data-bin", "--batch-size", "4"],
            "data directory '/nonexistent/data-bin' does not exist",
        ),
        ("bptt below 1", ["{data}", "--bptt", "0", "--batch-size", "4"], "--bptt must be at least 1"),
        ("batch too big", ["{data}", "--batch-size", "100000"], "lower --batch-size"),
    ],
)
def test_bad_input_gives_one_clear_line(case, args, message, sample_bin, tmp_path):
    args = [a.format(data=sample_bin) for a in args]
    proc = run_cli("fairseq-train", *args, *TRAIN_FLAGS, "--max-update", "1", "--save-dir", tmp_path, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error:") and message in last


def test_split_not_binarized(trained, sample_bin):
    save, _ = trained
    proc = run_cli(
        "fairseq-eval-lm",
        sample_bin,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        save / "checkpoint_last.pt",
        "--gen-subset",
        "dev",
        "--cpu",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "split 'dev' is not in" in proc.stderr.strip().splitlines()[-1]


def test_dictionary_that_does_not_match_the_data(sample_bin, tmp_path):
    import shutil

    for name in ["valid.bin", "valid.idx"]:
        shutil.copy(sample_bin / name, tmp_path / name)
    (tmp_path / "dict.txt").write_text("the 10\n")
    proc = run_cli(
        "fairseq-train",
        tmp_path,
        *TRAIN_FLAGS,
        "--batch-size",
        "4",
        "--train-subset",
        "valid",
        "--save-dir",
        tmp_path / "ck",
        check=False,
    )
    assert "Traceback" not in proc.stderr
    assert "binarized with another dictionary" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "case,args,env,message",
    [
        ("other dictionary", ["--gen-subset", "valid"], {}, "dictionary entries"),
        ("other task", ["--task", "language_modeling"], {}, "qrnn_lm needs --task alternating_lm"),
        pytest.param(
            "cuda without a GPU",
            ["--gen-subset", "valid"],
            {"ALTSG_FORGET_MULT": "cuda"},
            "ALTSG_FORGET_MULT=cuda needs",
            marks=pytest.mark.skipif(
                CUDA_KERNELS, reason="this machine has a GPU and CuPy: ALTSG_FORGET_MULT=cuda is no mistake here"
            ),
        ),
        ("unknown backend", ["--gen-subset", "valid"], {"ALTSG_FORGET_MULT": "fast"}, "is not a forget-mult backend"),
    ],
)
def test_evaluation_mistakes_give_one_clear_line(trained, sample_bin, tmp_path, case, args, env, message):
    save, _ = trained
    data = sample_bin
    if case == "other dictionary":  # the same data under a dictionary of another size
        import shutil

        for name in ["valid.bin", "valid.idx", "dict.txt"]:
            shutil.copy(sample_bin / name, tmp_path / name)
        with open(tmp_path / "dict.txt", "a") as f:
            f.write("".join(f"extra{i} 1\n" for i in range(16)))
        data = tmp_path
    flags = [
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        save / "checkpoint_last.pt",
        "--cpu",
    ]
    proc = run_cli("fairseq-eval-lm", data, *flags, *args, check=False, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--use-sg", "--arch", "lstm_lm"], "--use-sg needs a model with carried recurrent state"),
        (["--use-sg", "--criterion", "cross_entropy"], "--use-sg needs --criterion synthetic_gradient_lm"),
        (["--use-sg", "--sg-hidden", "0"], "--sg-hidden and --sg-layers must be at least 1"),
        (["--batch-size", "0"], "at least 1"),
    ],
)
def test_training_mistakes_give_one_clear_line(sample_bin, tmp_path, flags, message):
    base = [f for f in TRAIN_FLAGS if f not in ("--embed-dim", "--hidden-dim", "64")]
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *base,
        "--batch-size",
        "4",
        *flags,
        "--save-dir",
        tmp_path,
        "--max-update",
        "1",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]


def test_empty_data_directory(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_cli(
        "fairseq-train",
        tmp_path / "data",
        *TRAIN_FLAGS,
        "--batch-size",
        "4",
        "--save-dir",
        tmp_path / "ck",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no dict.txt in" in proc.stderr.strip().splitlines()[-1]


def test_resuming_from_a_corrupted_checkpoint(sample_bin, tmp_path):
    (tmp_path / "checkpoint_last.pt").write_bytes(b"\x80\x02 truncated")
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        "--batch-size",
        "4",
        "--save-dir",
        tmp_path,
        "--max-update",
        "1",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cannot read checkpoint" in proc.stderr.strip().splitlines()[-1]
