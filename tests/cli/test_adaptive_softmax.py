"""Large vocabularies: fairseq's adaptive softmax in qrnn_lm (the original code splits its softmax above 75k types)."""

import math
import re

import pytest
import torch
from helpers import REPO, SAMPLE, TRAIN_FLAGS, build_from_flags, run_cli


def build(data, *flags):
    return build_from_flags(data, "--embed-dim", "16", "--hidden-dim", "16", *flags)[1:]


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory):
    """A data directory whose dictionary has 80,004 entries: the sample corpus's
    words, then rare made-up words (the sample corpus binarized with it)."""
    data = tmp_path_factory.mktemp("big-vocab")
    words = {w for split in ("train", "valid", "test") for w in (SAMPLE / f"{split}.txt").read_text().split()}
    words = sorted(words - {"<unk>", "<s>", "</s>", "<pad>"})
    words += [f"rare{i}" for i in range(80_000 - len(words))]
    (data / "dict.txt").write_text("".join(f"{w} 1\n" for w in words))
    run_cli(
        "fairseq-preprocess",
        "--only-source",
        "--srcdict",
        data / "dict.txt",
        "--trainpref",
        SAMPLE / "train.txt",
        "--validpref",
        SAMPLE / "valid.txt",
        "--testpref",
        SAMPLE / "test.txt",
        "--destdir",
        data,
        "--workers",
        "2",
    )
    return data


def test_above_75k_types_the_softmax_is_split_at_the_original_cutoffs(big_vocab):
    task, model, criterion = build(big_vocab)
    adaptive = model.decoder.adaptive_softmax
    assert len(task.dictionary) == 80_004
    assert adaptive is not None and adaptive.cutoff == [2800, 20000, 76000, 80_004]
    full = 80_004 * 16 + 80_004  # the tied full softmax's bias alone, plus a head as big as the vocabulary
    assert sum(p.numel() for p in adaptive.parameters()) < full
    # 'none' forces the full, tied softmax
    _, plain, _ = build(big_vocab, "--adaptive-softmax-cutoff", "none")
    assert plain.decoder.adaptive_softmax is None


def test_loss_and_normalized_probabilities_agree(big_vocab):
    """The criterion's cluster-wise cross-entropy equals -log p(target) from
    get_normalized_probs, which sums to one over the vocabulary."""
    task, model, criterion = build(big_vocab, "--adaptive-softmax-cutoff", "50,2000,30000")
    model.eval()
    torch.manual_seed(0)
    # targets in every cluster: the head, and the three tails
    tokens = torch.tensor([[5, 60, 3000, 40000, 79000, 7, 2500], [45000, 9, 77, 31000, 1999, 2001, 4]])
    sample = {
        "net_input": {"src_tokens": tokens[:, :-1], "src_lengths": None, "stream": None, "reset": True},
        "target": tokens[:, 1:].contiguous(),
        "ntokens": tokens[:, 1:].numel(),
        "nsentences": 2,
    }
    loss, _, log = criterion(model, sample)
    net_output = model(**sample["net_input"])
    full = model.get_normalized_probs(net_output, log_probs=True)  # every word's (the generator's call)
    assert full.shape == (2, 6, 80_004)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 6), rtol=1e-4, atol=1e-4)
    # with the sample, fairseq computes only the targets' clusters (eval-lm's call)
    scored = model.get_normalized_probs(net_output, log_probs=True, sample=sample)
    for lprobs in (full, scored):
        expected = -lprobs.gather(2, sample["target"].unsqueeze(-1)).sum()
        torch.testing.assert_close(log["nll_loss"], expected, rtol=1e-4, atol=1e-3)


def test_cutoffs_are_checked(big_vocab):
    with pytest.raises(SystemExit, match="cutoffs must be increasing"):
        build(big_vocab, "--adaptive-softmax-cutoff", "3000,2000")
    with pytest.raises(SystemExit, match="comma-separated integers"):
        build(big_vocab, "--adaptive-softmax-cutoff", "many")


@pytest.mark.slow  # 15-25 s
def test_train_and_eval_lm_with_80k_types(big_vocab, tmp_path):
    save = tmp_path / "ckpt"
    proc = run_cli(
        "fairseq-train",
        big_vocab,
        *TRAIN_FLAGS,
        "--batch-size",
        "8",
        "--batch-size-valid",
        "10",
        "--bptt",
        "35",
        "--max-update",
        "4",
        "--save-dir",
        save,
    )
    log = proc.stdout + proc.stderr
    assert "AdaptiveSoftmax" in log
    valid = float(re.findall(r'"valid_loss": "([0-9.]+)"', log)[-1])
    out = run_cli(
        "fairseq-eval-lm",
        big_vocab,
        "--user-dir",
        REPO / "altsg_fairseq",
        "--task",
        "alternating_lm",
        "--path",
        save / "checkpoint_last.pt",
        "--cpu",
        "--gen-subset",
        "valid",
        "--batch-size",
        "10",
        "--bptt",
        "35",
    )
    scored = float(re.search(r"Loss \(base 2\): ([0-9.]+)", out.stdout + out.stderr).group(1))
    assert math.isclose(scored, valid, abs_tol=2e-3)
