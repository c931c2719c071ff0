#!/usr/bin/env python
"""Score a plain text file with a trained checkpoint: its perplexity, per line, or per word.

    python scripts/score_text.py TEXT CHECKPOINT [--data DIR] [--per-line] [--word-scores] [--bptt 70] [--cpu] [--amp]

TEXT: one sentence per line, words separated by spaces, as the training text
(fairseq adds an end of sentence to every line). CHECKPOINT: a .pt file that
fairseq-train wrote, or its --save-dir (then checkpoint_best.pt); its
dictionary is the dict.txt beside it (``--task alternating_lm`` puts a copy
there) or in --data. Words outside the dictionary count as <unk>; their
number is printed.

By default the file is scored as one stream whose recurrent state is carried
from line to line, exactly as ``fairseq-eval-lm --batch-size 1`` scores a
binarized split (the command binarizes TEXT with the checkpoint's dictionary
and runs fairseq-eval-lm; its first word, which has nothing before it, is not
scored). --word-scores prints every scored word (</s> at the line ends) with
its log-probability in bits (from eval-lm's --output-word-probs). --per-line scores every line alone, the state
reset at its start, through the hub interface's ``score()`` (the line's
words and its end of sentence, each given the line so far): a tab-separated
line per input line (line number, log-probability in bits, tokens,
perplexity), and the perplexity of all of them together. Perplexities are
2 ** (bits per token), fairseq's.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent


class ScoreError(Exception):
    """A mistake in the arguments or files (the message is one line)."""


def locate(checkpoint: str, data: str = None):
    """(checkpoint file, folder holding its dict.txt)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint_best.pt"
    if not path.is_file():
        raise ScoreError(f"{checkpoint}: no such checkpoint (give a .pt file or a --save-dir with checkpoint_best.pt)")
    folder = Path(data) if data else path.parent
    if not (folder / "dict.txt").is_file():
        raise ScoreError(
            f"no dict.txt in {folder}: pass --data, the fairseq-preprocess folder the model was trained on"
        )
    return path, folder


def unknown_words(text: Path, dictionary: Path):
    """(tokens of TEXT without the line ends, those outside the dictionary)."""
    from fairseq.data import Dictionary  # its reading of dict.txt: special symbols, "#fairseq:overwrite" flags

    known = Dictionary.load(str(dictionary)).indices
    try:
        words = text.read_text(encoding="utf-8").split()
    except UnicodeDecodeError as e:
        raise ScoreError(f"{text} is not UTF-8 text ({e.reason} at byte {e.start}): re-encode it") from None
    return len(words), sum(1 for w in words if w not in known)


def read_lines(text: Path):
    """TEXT's lines as fairseq-preprocess reads them (Python's universal newlines: \\n, \\r\\n, \\r;
    not str.splitlines(), which also splits at \\f, \\v, \\x1c-\\x1e, \\x85, \\u2028, \\u2029)."""
    with open(text, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def tool(name, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise ScoreError(f"{name} failed: {lines[-1]}")
    return proc.stdout + proc.stderr


def score_stream(text: Path, checkpoint: Path, folder: Path, args) -> None:
    with tempfile.TemporaryDirectory() as work:
        # fairseq splits --testpref at commas and --path at colons: both go in under plain names
        os.symlink(text.resolve(), os.path.join(work, "text"))
        os.symlink(checkpoint.resolve(), os.path.join(work, "model.pt"))
        tool(
            "fairseq-preprocess",
            "--only-source",
            "--srcdict",
            folder / "dict.txt",
            "--testpref",
            os.path.join(work, "text"),
            "--destdir",
            os.path.join(work, "bin"),
            "--workers",
            "1",
        )
        log = tool(
            "fairseq-eval-lm",
            os.path.join(work, "bin"),
            "--user-dir",
            REPO / "altsg_fairseq",
            "--task",
            "alternating_lm",
            "--path",
            os.path.join(work, "model.pt"),
            "--gen-subset",
            "test",
            "--batch-size",
            "1",
            "--bptt",
            args.bptt,
            *(["--cpu"] if args.cpu else []),
            *(["--amp"] if args.amp else []),
            *(["--output-word-probs"] if args.word_scores else []),
        )
    if args.word_scores:
        print_word_scores(log, text)
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", log).group(1))
    perplexity = float(re.search(r"Perplexity: ([0-9.]+)", log).group(1))  # from the unrounded loss
    tokens = int(re.search(r"Evaluated ([0-9,]+) tokens", log).group(1).replace(",", ""))
    print(
        f"{text}: {tokens:,} tokens scored (the first has no history), {loss:.4f} bits per token, "
        f"perplexity {perplexity:.2f}"
    )


def print_word_scores(log: str, text: Path) -> None:
    """Every scored word of eval-lm's --output-word-probs lines ("<window> word [log-prob]\tword [log-prob] ...",
    natural log, in order) with its log-probability in bits; a word outside the dictionary, which eval-lm
    shows as <unk>, under its own spelling."""
    scored = []
    for line in log.splitlines():
        found = re.search(r"fairseq_cli\.eval_lm(?: \| |:)\d+ (\S+ \[.*)$", line)
        if found:
            scored += re.findall(r"(\S+) \[(-?[0-9.]+(?:e-?[0-9]+)?|-?inf)\]", found.group(1))
    words = [w for line in read_lines(text) for w in [*line.split(), "</s>"]]
    if len(scored) != len(words) - 1:  # the stream's first word is not scored
        raise ScoreError(
            f"fairseq-eval-lm scored {len(scored):,} words of the {len(words) - 1:,} expected: "
            f"report this with the text"
        )
    for (shown, nats), word in zip(scored, words[1:]):
        name = word if shown == word else f"{word} ({shown})"
        print(f"{name}\t{float(nats) / math.log(2):.4f}")  # in bits, as fairseq's losses


def score_lines(text: Path, checkpoint: Path, folder: Path, args) -> None:
    import torch  # noqa: F401
    from fairseq.models import BaseFairseqModel  # noqa: F401  (fairseq's registries first)

    sys.path.insert(0, str(REPO))
    from altsg_fairseq.models.qrnn_lm import QRNNLanguageModel

    # absolute: from_pretrained reads a data path that starts with "." as relative to the checkpoint's folder
    hub = QRNNLanguageModel.from_pretrained(
        str(checkpoint.parent.resolve()),
        checkpoint.name,
        str(folder.resolve()),
        user_dir=str(REPO / "altsg_fairseq"),
        cpu=args.cpu,
        amp=args.amp,
    )
    hub.eval()
    total_bits = total_tokens = 0
    for number, line in enumerate(read_lines(text), start=1):
        scores = hub.score(line)["positional_scores"]  # natural log, the line's words and its </s>
        bits = float(scores.sum()) / math.log(2)  # fairseq reports base 2
        total_bits += bits
        total_tokens += scores.numel()
        print(f"{number}\t{bits:.4f}\t{scores.numel()}\t{2 ** (-bits / scores.numel()):.2f}")
    print(
        f"{text}: {total_tokens:,} tokens in lines scored alone, {-total_bits / total_tokens:.4f} bits per token, "
        f"perplexity {2 ** (-total_bits / total_tokens):.2f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="score_text.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python scripts/score_text.py my.txt runs/qrnn --per-line",
    )
    parser.add_argument("text", help="plain text, one sentence per line")
    parser.add_argument("checkpoint", help="a checkpoint .pt, or a --save-dir (its checkpoint_best.pt)")
    parser.add_argument(
        "--data", help="the folder of the dict.txt the model was trained with (default: beside the checkpoint)"
    )
    parser.add_argument("--per-line", action="store_true", help="score every line alone (the state reset at each line)")
    parser.add_argument("--word-scores", action="store_true", help="print every word's log-probability (bits)")
    parser.add_argument(
        "--bptt", type=int, default=70, help="window length of the stream scoring (the result does not depend on it)"
    )
    parser.add_argument("--cpu", action="store_true", help="score on the CPU even where there is a GPU")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision, as fairseq-train --amp: bfloat16 autocast on a CPU (losses in float32)",
    )
    args = parser.parse_args(argv)
    try:
        text = Path(args.text)
        if args.per_line and args.word_scores:
            raise ScoreError("--word-scores prints the words of the whole-file score: leave out --per-line")
        if not text.is_file():
            raise ScoreError(f"{text}: no such file")
        checkpoint, folder = locate(args.checkpoint, args.data)
        words, unknown = unknown_words(text, folder / "dict.txt")
        print(f"{text}: {words:,} words, {unknown:,} outside the dictionary (scored as <unk>)")
        if words == 0:
            raise ScoreError(f"{text} holds no words")
        (score_lines if args.per_line else score_stream)(text, checkpoint, folder, args)
    except ScoreError as e:
        print(f"score_text.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
