"""What new users and public bug reports ran into, through the real CLIs: every
mistake ends with one line (no traceback, nothing written), every flag that
does not apply says so, a diverging run stops with a line."""

import os

import pytest

from helpers import BIN, REPO, SAMPLE, TRAIN_FLAGS, binarize_with, run_cli

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


# ---- splits without text ------------------------------------------------------------------------

BLANK_LINES = 3
SHORT = "the city of"  # 3 words: 4 tokens with the end of the line


@pytest.fixture(scope="module")
def thin_splits(sample_bin, tmp_path_factory):
    """Splits binarized by fairseq-preprocess with the sample's dictionary: train (20 lines of text),
    valid (from an empty file), valid1 (from blank lines only), valid2 (one short line)."""
    text = tmp_path_factory.mktemp("thin-text")
    (text / "train.txt").write_text("".join((SAMPLE / "valid.txt").read_text().splitlines(True)[:20]))
    (text / "empty.txt").write_text("")
    (text / "blank.txt").write_text("\n \n\t\n")
    (text / "short.txt").write_text(SHORT + "\n")
    data = tmp_path_factory.mktemp("thin-bin")
    proc = binarize_with(
        sample_bin / "dict.txt",
        data,
        text / "train.txt",
        f"{text / 'empty.txt'},{text / 'blank.txt'},{text / 'short.txt'}",
    )
    # what fairseq-preprocess does with them: binarizes without a word of warning, the empty file into
    # an empty .bin, the blank lines into end-of-line tokens
    log = proc.stdout + proc.stderr
    assert "empty.txt: 0 sents, 0 tokens" in log and (data / "valid.bin").stat().st_size == 0
    assert f"blank.txt: {BLANK_LINES} sents, {BLANK_LINES} tokens" in log
    return data


@pytest.mark.parametrize("content,message", [("", "is empty"), ("\n  \n", "holds only blank lines (2)")])
def test_preprocess_sh_refuses_a_split_without_text(tmp_path, content, message):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("the city of\n" if split != "valid" else content)
    import subprocess

    proc = subprocess.run(
        ["bash", REPO / "scripts" / "data" / "preprocess.sh", tmp_path, tmp_path / "bin"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"),
    )
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"preprocess.sh: error: {tmp_path}/valid.txt {message}: every split needs text (train.txt, valid.txt "
        f"and test.txt, one sentence per line); put text in it"
    )
    assert not (tmp_path / "bin").exists()


SPLITS_WITHOUT_TEXT = [
    ("empty", "valid", [], "split 'valid' in '{data}' is empty (valid.bin holds no tokens"),
    ("blank lines", "valid1", [], f"split 'valid1' in '{{data}}' holds only empty lines ({BLANK_LINES} of them"),
    ("fewer tokens than the rows", "valid2", ["4"], "split 'valid2' has 4 tokens, too few for 4 rows of at least 2"),
    ("missing", "nosuch", [], "split 'nosuch' is not in '{data}' (no nosuch.bin/nosuch.idx)"),
]


# the default suite runs the empty split; the other kinds are slow tests
WITHOUT_TEXT_CASES = [
    pytest.param(*case, id=case[0], marks=() if case[0] == "empty" else pytest.mark.slow)
    for case in SPLITS_WITHOUT_TEXT
]


@pytest.mark.parametrize("role", ["train", "valid"])
@pytest.mark.parametrize("case,split,rows,message", WITHOUT_TEXT_CASES)
def test_training_on_a_split_without_text(thin_splits, tmp_path, role, case, split, rows, message):
    """fairseq-train: ValueError: cannot mmap an empty file (a traceback) for an empty split; a split of
    blank lines trained or validated on end-of-line tokens alone. Now each is one line, nothing saved."""
    subsets = ["--train-subset", split, "--valid-subset", "train"] if role == "train" else ["--valid-subset", split]
    flag = "--batch-size" if role == "train" else "--batch-size-valid"
    proc = run_cli(
        "fairseq-train",
        thin_splits,
        *TRAIN_FLAGS,
        "--batch-size",
        "2",
        *([flag, *rows] if rows else []),
        "--max-update",
        "1",
        *subsets,
        "--ignore-unused-valid-subsets",  # (fairseq refuses valid1, valid2 in the folder otherwise)
        "--save-dir",
        tmp_path,
        check=False,
    )
    one_line_error(proc, message.format(data=thin_splits))
    if rows:
        assert f"lower {flag} (to at most 2)" in proc.stderr  # 4 tokens: 2 rows of 2
    assert not any(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("case,split,rows,message", WITHOUT_TEXT_CASES)
def test_evaluating_a_split_without_text(trained, thin_splits, case, split, rows, message):
    """fairseq-eval-lm --gen-subset: the same traceback for an empty split; blank lines were scored (a
    perplexity of end-of-line tokens). Now one line each."""
    save, _ = trained
    proc = run_cli(
        "fairseq-eval-lm",
        thin_splits,
        *EVAL,
        "--path",
        save / "checkpoint_last.pt",
        "--gen-subset",
        split,
        "--batch-size",
        *(rows or ["1"]),
        check=False,
    )
    one_line_error(proc, message.format(data=thin_splits))
    if rows:
        assert "lower --batch-size (to at most 2)" in proc.stderr
