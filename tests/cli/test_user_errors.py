"""What new users and public bug reports ran into, through the real CLIs: every
mistake ends with one line (no traceback, nothing written), every flag that
does not apply says so, a diverging run stops with a line."""

import os

import pytest

from helpers import BIN, REPO, SAMPLE, TRAIN_FLAGS, run_cli

EVAL = ["--user-dir", REPO / "altsg_fairseq", "--task", "alternating_lm", "--cpu"]


def one_line_error(proc, message):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("altsg_fairseq: error:") and message in last, last


@pytest.mark.parametrize(
    "case,flags,message",
    [
        ("fp16 on a CPU", ["--fp16"], "--fp16 needs a GPU"),
        ("memory-efficient fp16 on a CPU", ["--memory-efficient-fp16"], "--memory-efficient-fp16 needs a GPU"),
        # fairseq turns --bf16 into --tpu (an XLA device): refused on any machine, pointing to --amp
        ("bf16", ["--bf16"], "make fairseq run on an XLA (TPU) device, which needs torch_xla"),
        ("memory-efficient bf16", ["--memory-efficient-bf16"], "make fairseq run on an XLA (TPU) device"),
        ("bf16 with amp", ["--bf16", "--amp"], "for mixed precision use --amp instead"),
        # several processes: fairseq would spawn them through torch_xla before any task is set up
        ("bf16 on two processes", ["--bf16", "--distributed-world-size", "2"], "use --amp instead"),
        ("save dir is a file", ["--save-dir", "{file}"], "cannot write checkpoints to --save-dir"),
        (
            "save dir cannot be made",
            ["--save-dir", "/proc/altsg-checkpoints"],
            "cannot write checkpoints to --save-dir",
        ),
        ("restore file missing", ["--restore-file", "{tmp}/nope.pt"], "--restore-file {tmp}/nope.pt: no such file"),
        (
            "finetune file missing",
            ["--finetune-from-model", "{tmp}/nope.pt"],
            "--finetune-from-model {tmp}/nope.pt does not exist",
        ),
        ("valid rows", ["--batch-size-valid", "50000"], "lower --batch-size-valid"),
    ],
)
def test_training_mistakes(sample_bin, tmp_path, case, flags, message):
    (tmp_path / "a-file").write_text("not a folder")
    subst = {"file": tmp_path / "a-file", "tmp": tmp_path}
    flags = [str(f).format(**subst) for f in flags]
    save = [] if "--save-dir" in flags else ["--save-dir", tmp_path / "ck"]
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        "--batch-size",
        "4",
        "--max-update",
        "1",
        "--train-subset",
        "valid",
        "--valid-subset",
        "test",
        *save,
        *flags,
        check=False,
    )
    one_line_error(proc, message.format(**subst))
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").glob("*.pt"))


def test_a_data_directory_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("")
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
    one_line_error(proc, "is a file: give the --destdir folder")


@pytest.mark.parametrize(
    "case,flags,message",
    [
        ("context window", ["--batch-size", "1", "--context-window", "10"], "--context-window does not apply"),
        (
            "softmax batch with the cache",
            ["--batch-size", "1", "--cache-window", "50", "--softmax-batch", "20"],
            "--softmax-batch splits the windows",
        ),
        ("max tokens without rows", ["--max-tokens", "2000"], "--max-tokens 2000 does not apply"),
        ("no checkpoint", ["--batch-size", "1", "--path", "{tmp}/nope.pt"], "--path {tmp}/nope.pt: no such checkpoint"),
    ],
)
def test_evaluation_mistakes(trained, sample_bin, tmp_path, case, flags, message):
    save, _ = trained
    flags = [str(f).format(tmp=tmp_path) for f in flags]
    path = [] if "--path" in flags else ["--path", save / "checkpoint_last.pt"]
    proc = run_cli("fairseq-eval-lm", sample_bin, *EVAL, *path, "--gen-subset", "valid", *flags, check=False)
    one_line_error(proc, message.format(tmp=tmp_path))


def test_flags_that_do_not_apply_say_so(sample_bin, tmp_path):
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *TRAIN_FLAGS,
        "--batch-size",
        "200",
        "--bptt",
        "100000",
        "--amp",
        "--max-update",
        "1",
        "--train-subset",
        "valid",
        "--valid-subset",
        "test",
        "--disable-validation",
        "--save-dir",
        tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "precision: bfloat16 autocast on the CPU (--amp)" in log
    assert "--amp: a batch whose gradients overflow is skipped, not retried (--amp-batch-retries 2" in log
    assert "--bptt 100000 is as long as the rows of 'valid' (109 tokens each in 200 rows)" in log


def test_a_diverging_run_stops_with_one_line(sample_bin, tmp_path):
    flags = [f for f in TRAIN_FLAGS if f not in ("--lr", "2e-3", "--clip-norm", "0.25")]
    proc = run_cli(
        "fairseq-train",
        sample_bin,
        *flags,
        "--lr",
        "1e4",
        "--clip-norm",
        "0",
        "--batch-size",
        "20",
        "--max-update",
        "30",
        "--train-subset",
        "valid",
        "--valid-subset",
        "test",
        "--save-dir",
        tmp_path,
        check=False,
    )
    one_line_error(proc, "training diverged at update ")
    assert "lower --lr or set --clip-norm" in proc.stderr
    assert not any(tmp_path.glob("checkpoint*.pt"))  # no "best" checkpoint of a diverged run


def test_text_that_is_not_utf8_names_the_file_and_line(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_bytes((SAMPLE / f"{split}.txt").read_bytes())
    with open(tmp_path / "valid.txt", "ab") as f:
        f.write(b"caf\xe9 au lait\n")
    lines = len((SAMPLE / "valid.txt").read_bytes().splitlines()) + 1
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    import subprocess

    proc = subprocess.run(
        ["bash", REPO / "scripts" / "data" / "preprocess.sh", tmp_path, tmp_path / "bin"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"preprocess.sh: error: {tmp_path}/valid.txt line {lines:,} is not UTF-8 (byte "
        f"0xe9 at column 4): re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
    )
    assert not (tmp_path / "bin").exists()


def test_the_demo_refuses_zero_epochs():
    import subprocess

    proc = subprocess.run(
        ["bash", REPO / "scripts" / "demo.sh"],
        capture_output=True,
        text=True,
        env=dict(os.environ, EPOCHS="0"),
        cwd=REPO,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("demo.sh: error: EPOCHS must be")
