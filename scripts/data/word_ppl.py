#!/usr/bin/env python
"""Word-level perplexity of a subword language model from fairseq-eval-lm's output.

fairseq-eval-lm reports the loss per subword token:

    Evaluated N tokens in ...
    Loss (base 2): X, Perplexity: 2**X

The whole split then costs X * N bits. Spread over its W word-level tokens
(words plus one <eos> per line, the tokens a word-level model predicts; fairseq
adds one end-of-sentence token per line to subword and word data alike) that is
a word-level perplexity of 2 ** (X * N / W), comparable with a word-level
model's perplexity on the same text:

    fairseq-eval-lm data-bin/wt2-spm2000 --user-dir altsg_fairseq --task alternating_lm \\
        --path runs/spm/checkpoint_best.pt --gen-subset test --batch-size 1 --bptt 70 2>&1 | tee eval.log
    python scripts/data/word_ppl.py eval.log data/wt2/test.txt --pieces data/wt2-spm2000/test.txt

Evaluate with --batch-size 1 so the whole split is scored. With more rows
eval-lm leaves out the end of the split and the first token of each row;
given --pieces the script then counts the words of the scored part in
proportion (N / (S - 1) of them, S being the split's subword tokens) and says
that the figure is an estimate. The log prints the loss to 4 decimals, so the
word-level perplexity is good to about 0.01 %.
"""

import argparse
import json
import math
import re
import sys

EVALUATED = re.compile(r"Evaluated ([0-9,]+) tokens")
LOSS = re.compile(r"Loss \(base 2\): (\S+), Perplexity: (\S+)")


class PplError(Exception):
    """A problem with the inputs, reported as one line."""


def read_text(path, what):
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PplError(f"cannot read the {what} {path} ({e})") from None


def parse_eval_log(text, where):
    """(N, X, perplexity) from fairseq-eval-lm's output (its last evaluation when there are several)."""
    evaluated, loss = EVALUATED.findall(text), LOSS.findall(text)
    if not evaluated or not loss:
        missing = "'Evaluated N tokens'" if not evaluated else "'Loss (base 2): X, Perplexity: Y'"
        raise PplError(f"no {missing} line in {where}; pass fairseq-eval-lm's whole output (2>&1)")
    tokens = int(evaluated[-1].replace(",", ""))
    try:
        bits, ppl = float(loss[-1][0]), float(loss[-1][1])
    except ValueError:
        raise PplError(f"cannot read the loss in {where}: {loss[-1]}") from None
    if tokens < 1 or not math.isfinite(bits):
        raise PplError(f"{where} reports {tokens} tokens with loss {bits}: nothing to convert")
    return tokens, bits, ppl


def count_split(path, what):
    """(lines, tokens) of a text file, tokens = whitespace-separated items plus one end-of-line token per line."""
    lines = read_text(path, what).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return len(lines), sum(len(line.split()) + 1 for line in lines)


def word_perplexity(eval_log, raw_text, pieces=None):
    """The numbers behind the conversion, as a dict."""
    n, bits, subword_ppl = parse_eval_log(
        read_text(eval_log, "eval-lm output"), "standard input" if eval_log == "-" else eval_log
    )
    lines, w = count_split(raw_text, "raw text")
    result = {
        "subword_tokens_scored": n,
        "subword_loss_base2": bits,
        "subword_ppl": subword_ppl,
        "lines": lines,
        "words": w - lines,
        "word_tokens": w,
        "subword_tokens_in_split": None,
        "word_tokens_scored": w,
        "estimated": False,
    }
    if pieces:
        piece_lines, s = count_split(pieces, "pieces file")
        if piece_lines != lines:
            raise PplError(f"{pieces} has {piece_lines:,} lines and {raw_text} {lines:,}: not the same split")
        if n > s:
            raise PplError(f"eval-lm scored {n:,} tokens but {pieces} has only {s:,}: a log of another split?")
        result["subword_tokens_in_split"] = s
        if n < s - 1:  # eval-lm left part of the split out: count the words of the scored part in proportion
            result["word_tokens_scored"] = w * n / (s - 1)
            result["estimated"] = True
    result["word_loss_base2"] = bits * n / result["word_tokens_scored"]
    result["word_ppl"] = 2.0 ** result["word_loss_base2"]
    return result


def report(r, raw_text):
    print(
        f"subword: {r['subword_tokens_scored']:,} tokens scored, loss {r['subword_loss_base2']:.4f} bits, "
        f"perplexity {r['subword_ppl']:.2f}"
    )
    print(f"{raw_text}: {r['words']:,} words + {r['lines']:,} <eos> (one per line) = {r['word_tokens']:,} word tokens")
    if r["subword_tokens_in_split"] is not None:
        s = r["subword_tokens_in_split"]
        print(f"pieces: {s:,} subword tokens in the split ({s / r['word_tokens']:.3f} per word token)")
    if r["estimated"]:
        print(
            f"note: eval-lm scored {r['subword_tokens_scored']:,} of the split's "
            f"{r['subword_tokens_in_split'] - 1:,} "
            f"predictable tokens (--batch-size above 1); the word count is taken in proportion, "
            f"{r['word_tokens_scored']:,.1f}; evaluate with --batch-size 1 for the exact figure"
        )
    print(
        f"word-level: loss {r['word_loss_base2']:.4f} bits = {r['subword_loss_base2']:.4f} x "
        f"{r['subword_tokens_scored']:,} / {r['word_tokens_scored']:,.{1 if r['estimated'] else 0}f}, "
        f"perplexity {r['word_ppl']:.2f}" + (" (estimate)" if r["estimated"] else "")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="word_ppl.py",
        description="Turn fairseq-eval-lm's subword loss into a word-level perplexity, 2 ** (X * N / W):\n"
        "X the loss (base 2) per subword token, N the tokens scored, W the raw split's words\n"
        "plus one <eos> per line.",
        epilog="example:\n  fairseq-eval-lm ... --gen-subset test --batch-size 1 2>&1 \\\n"
        "    | python scripts/data/word_ppl.py - data/wt2/test.txt --pieces data/wt2-spm2000/test.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "eval_log", metavar="EVAL_LOG", help="fairseq-eval-lm's output (a file, or - for standard input)"
    )
    parser.add_argument(
        "raw_text", metavar="RAW_TEXT", help="the word-level text of the evaluated split (e.g. data/wt2/test.txt)"
    )
    parser.add_argument(
        "--pieces",
        metavar="FILE",
        help="the encoded split that was binarized (e.g. "
        "data/wt2-spm2000/test.txt): checks the line count, shows pieces per word and handles a "
        "partly scored split",
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    args = parser.parse_args(argv)
    if [args.eval_log, args.raw_text, args.pieces].count("-") > 1:
        sys.exit("word_ppl.py: error: only one of the files can be standard input (-)")
    try:
        result = word_perplexity(args.eval_log, args.raw_text, args.pieces)
    except PplError as e:
        sys.exit(f"word_ppl.py: error: {e}")
    if args.json:
        print(json.dumps(result))
    else:
        report(result, args.raw_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
