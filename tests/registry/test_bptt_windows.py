import numpy as np
import pytest
import torch

from altsg_fairseq.tasks.bptt_windows import BPTTWindowDataset, TokenStream, random_windows


def served(dataset):
    src = torch.cat([dataset.collater([i])["net_input"]["src_tokens"] for i in range(len(dataset))], 1)
    tgt = torch.cat([dataset.collater([i])["target"] for i in range(len(dataset))], 1)
    return src, tgt


@pytest.mark.parametrize("training", [True, False])
def test_every_target_served_once_in_contiguous_rows(training):
    tokens = torch.arange(1003)
    ds = BPTTWindowDataset(TokenStream("train", tokens), rows_per_worker=4, bptt=20, training=training, seed=5)
    src, tgt = served(ds)
    rows = tokens[:1000].view(4, 250)  # the remainder (3 tokens) is dropped
    assert torch.equal(src, rows[:, :-1]) and torch.equal(tgt, rows[:, 1:])
    first = ds.collater([0])
    assert first["net_input"]["reset"] and not ds.collater([1])["net_input"]["reset"]
    assert first["ntokens"] == first["target"].numel()


def test_random_windows_follow_the_reference_distribution():
    rng = np.random.default_rng(0)
    windows = random_windows(10**6, 200, rng)
    lengths = np.array([w.length for w in windows[:-1]])
    assert lengths.min() >= 5
    short = (lengths < 150).mean()
    assert 0.04 < short < 0.06  # base bptt/2 with probability 0.05
    assert abs(np.median(lengths) - 200) <= 1
    for w in windows[:-1]:
        assert w.lr_scale == w.length / 200
    # the sampled length (not the clipped one) scales the lr of the last step
    assert windows[-1].lr_scale >= windows[-1].length / 200


def test_epochs_differ_but_are_reproducible():
    stream = TokenStream("train", torch.arange(5000))
    a = BPTTWindowDataset(stream, 2, 30, training=True, seed=1)
    b = BPTTWindowDataset(stream, 2, 30, training=True, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    assert a.windows == b.windows
    b.set_epoch(3)
    assert a.windows != b.windows


def test_workers_split_the_global_rows():
    """Two workers with b rows each see exactly the rows one worker with 2b rows sees."""
    stream = TokenStream("train", torch.arange(4001))
    one = BPTTWindowDataset(stream, 4, 25, training=True, seed=7)
    parts = [BPTTWindowDataset(stream, 2, 25, training=True, seed=7, num_workers=2, rank=r) for r in range(2)]
    assert all(p.windows == one.windows for p in parts)
    for i in range(len(one)):
        both = torch.cat([p.collater([i])["net_input"]["src_tokens"] for p in parts])
        assert torch.equal(both, one.collater([i])["net_input"]["src_tokens"])
