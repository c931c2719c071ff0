#!/usr/bin/env python
"""Subword (sentencepiece) version of a word-level corpus, binarized for alternating_lm.

fairseq-preprocess does not apply sentencepiece itself (its --bpe flag is
ignored there) and the pip wheel of sentencepiece has no spm_encode, so this
script does it with sentencepiece's Python API:

    python scripts/data/subword_data.py data/wt2 data/wt2-spm2000 --vocab-size 2000
    # -> data/wt2-spm2000/{spm.model,spm.vocab,train.txt,valid.txt,test.txt}, binarized into data/wt2-spm2000/bin

1. train a sentencepiece model on TEXT_DIR/train.txt (or take --model);
2. encode train/valid/test.txt line by line into space-separated pieces,
   one output line per input line (blank lines stay blank, so fairseq adds
   one </s> per line exactly as for the word-level data);
3. check that decoding the pieces gives every line back;
4. binarize with scripts/data/preprocess.sh.

Text is not normalised (normalization rule "identity"), characters outside the
model's alphabet are spelt as UTF-8 bytes (byte fallback) and the corpus's
literal "<unk>" is one piece, so the pieces spell exactly the words of the
word-level corpus: scripts/data/word_ppl.py can then turn fairseq-eval-lm's
subword loss into a word-level perplexity.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_data import SPLITS, DataError, binarize_and_report, normalise, read_lines  # noqa: E402


def train_model(lines, prefix, vocab_size, model_type, threads, coverage, byte_fallback):
    """Train a sentencepiece model on ``lines``; writes PREFIX.model and PREFIX.vocab."""
    import sentencepiece as spm

    sentences = [normalise(line) for line in lines]
    sentences = [s for s in sentences if s]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=coverage,
            byte_fallback=byte_fallback,
            normalization_rule_name="identity",  # keep the text as it is: pieces spell the words exactly
            user_defined_symbols=["<unk>"],  # the corpus's own unknown-word token, kept whole
            unk_piece="<spm-unk>",  # sentencepiece's unknown piece (unused with byte fallback)
            max_sentence_length=1 << 20,  # WikiText paragraphs are longer than the default 4192 bytes
            num_threads=threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(
            f"sentencepiece could not train a model ({message}); for a small corpus lower --vocab-size"
        ) from None


def encode_splits(model_file, splits, out_dir, threads):
    """Write OUT_DIR/{split}.txt as pieces; returns {split: (lines, words, pieces, lines not restored)}."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    stats = {}
    for split in SPLITS:
        text = [normalise(line) for line in splits[split]]
        pieces = sp.encode(text, out_type=str, num_threads=threads)
        restored = sp.decode(pieces)
        bad = [i + 1 for i, (a, b) in enumerate(zip(text, restored)) if a != b]
        path = out_dir / f"{split}.txt"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for p in pieces:
                f.write(" ".join(p) + "\n")
        words = sum(len(line.split()) for line in text)
        stats[split] = (len(text), words, sum(len(p) for p in pieces), bad)
    return stats


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="subword_data.py",
        description="Train a sentencepiece model on TEXT_DIR/train.txt, encode train/valid/test.txt into\n"
        "space-separated pieces (one line per input line) in OUT_DIR and binarize them for\n"
        "--task alternating_lm. Report word-level perplexity with scripts/data/word_ppl.py.",
        epilog="example: python scripts/data/subword_data.py data/wt2 data/wt2-spm2000 --vocab-size 2000\n"
        "         -> data/wt2-spm2000/{spm.model,train.txt,...}, binarized into data/wt2-spm2000/bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "text_dir", metavar="TEXT_DIR", help="folder with the word-level train.txt, valid.txt, test.txt"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where spm.model, spm.vocab and the encoded splits go")
    parser.add_argument("--bin", metavar="DIR", help="binarized data folder (default: OUT_DIR/bin)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        metavar="N",
        default=2000,
        help="sentencepiece vocabulary size, including its 3 specials, <unk> and, with byte "
        "fallback, 256 byte pieces (default: 2000)",
    )
    parser.add_argument(
        "--model-type", choices=["unigram", "bpe"], default="unigram", help="sentencepiece algorithm (default: unigram)"
    )
    parser.add_argument(
        "--model",
        metavar="FILE",
        help="encode with this existing .model instead of training one (it is copied to OUT_DIR/spm.model)",
    )
    parser.add_argument(
        "--character-coverage",
        type=float,
        metavar="F",
        default=0.9995,
        help="share of the characters the model's alphabet covers; rarer ones are spelt as bytes (default: 0.9995)",
    )
    parser.add_argument(
        "--no-byte-fallback",
        dest="byte_fallback",
        action="store_false",
        help="map rare characters to an unknown piece instead of bytes (then decoding does "
        "not give every line back and word_ppl's word counts are off)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        default=os.cpu_count() or 1,
        help="threads for training and encoding (default: all cores)",
    )
    parser.add_argument("--no-binarize", action="store_true", help="only write the model and the encoded text")
    return parser.parse_args(argv)


def run(args):
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        raise DataError("the sentencepiece package is missing; pip install sentencepiece") from None
    text_dir, out_dir = Path(args.text_dir), Path(args.out_dir)
    if not text_dir.is_dir():
        raise DataError(f"{text_dir} is not a folder")
    if text_dir.resolve() == out_dir.resolve():
        raise DataError("OUT_DIR must differ from TEXT_DIR (the encoded splits would replace the words)")
    if args.vocab_size < 8 or args.threads < 1:
        raise DataError("--vocab-size must be at least 8 and --threads at least 1")
    splits = {split: read_lines(text_dir / f"{split}.txt") for split in SPLITS}
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "spm.model"
    if args.model:
        if not Path(args.model).is_file():
            raise DataError(f"--model {args.model} is missing")
        if Path(args.model).resolve() != model.resolve():
            shutil.copyfile(args.model, model)
        print(f"using the sentencepiece model {args.model}")
    else:
        print(
            f"training a {args.model_type} sentencepiece model, {args.vocab_size} pieces, on "
            f"{text_dir / 'train.txt'} -> {model}",
            flush=True,
        )
        train_model(
            splits["train"],
            out_dir / "spm",
            args.vocab_size,
            args.model_type,
            args.threads,
            args.character_coverage,
            args.byte_fallback,
        )
    stats = encode_splits(model, splits, out_dir, args.threads)
    print(f"encoded -> {out_dir}/ (tokens per split: pieces or words, plus one </s> per line)")
    for split, (lines, words, pieces, bad) in stats.items():
        print(
            f"  {split + '.txt':10} {lines:>9,} lines {words + lines:>11,} word tokens "
            f"{pieces + lines:>11,} subword tokens ({(pieces + lines) / (words + lines):.3f} per word token)"
        )
    for split, (_, _, _, bad) in stats.items():
        if bad:
            print(
                f"warning: {len(bad)} lines of {split}.txt do not decode back to their words (first: line "
                f"{bad[0]}); word-level perplexities from word_ppl.py count the original words",
                file=sys.stderr,
            )
    if not args.no_binarize:
        binarize_and_report(out_dir, args.bin)


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except DataError as e:
        sys.exit(f"subword_data.py: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
