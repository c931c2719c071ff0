"""Contiguous rows of a token stream, served one BPTT window at a time."""

from typing import List, NamedTuple

import numpy as np
import torch
from fairseq.data import FairseqDataset


class TokenStream:
    """A split's tokens as one stream (N,): its lines in order, eos after each."""

    def __init__(self, name: str, tokens: torch.Tensor):
        self.name = name
        self.tokens = tokens

    def __len__(self) -> int:
        return self.tokens.numel()


class Window(NamedTuple):
    start: int  # first input position within every row
    length: int  # number of input (and target) positions
    lr_scale: float  # the step's learning-rate factor (sampled length / bptt)


def fixed_windows(row_length: int, bptt: int) -> List[Window]:
    """Windows of ``bptt`` inputs (the last one shorter) covering every target."""
    return [Window(i, min(bptt, row_length - 1 - i), 1.0) for i in range(0, row_length - 1, bptt)]


def random_windows(row_length: int, bptt: int, rng: np.random.Generator) -> List[Window]:
    """The AWD training windows (reference section 1).

    The base length is ``bptt`` with probability 0.95, else ``bptt / 2``; the
    length is max(5, int(Normal(base, 5))), clipped to the end of the row.
    The learning rate of the step is scaled by the sampled length / bptt.
    """
    windows, i = [], 0
    while i < row_length - 1:
        base = bptt if rng.random() < 0.95 else bptt / 2
        length = max(5, int(rng.normal(base, 5)))
        windows.append(Window(i, min(length, row_length - 1 - i), length / bptt))
        i += length
    return windows


class BPTTWindowDataset(FairseqDataset):
    """One split as ``num_rows`` contiguous rows, walked left to right.

    The token stream is cut into ``num_rows`` = rows_per_worker x
    num_workers equal rows (the remainder dropped); this worker owns rows
    [rank * rows_per_worker, (rank + 1) * rows_per_worker). Item ``i`` is
    window ``i`` of every owned row: inputs (B, T) and targets (B, T) shifted
    by one, so every target of a row is served exactly once per pass.

    Training windows (``training=True``) have random lengths drawn per epoch
    from a generator seeded by (seed, epoch), the same on every worker;
    other splits use fixed windows of ``bptt``.
    """

    def __init__(
        self,
        stream: TokenStream,
        rows_per_worker: int,
        bptt: int,
        training: bool = False,
        seed: int = 1,
        num_workers: int = 1,
        rank: int = 0,
    ):
        super().__init__()
        num_rows = rows_per_worker * num_workers
        self.row_length = len(stream) // num_rows
        rows = stream.tokens[: self.row_length * num_rows].view(num_rows, self.row_length)
        self.rows = rows[rank * rows_per_worker : (rank + 1) * rows_per_worker].contiguous()
        self.bptt = bptt
        self.stream_name = stream.name
        self.training = training
        self.seed = seed
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.training:
            rng = np.random.default_rng([self.seed, epoch])
            self.windows = random_windows(self.row_length, self.bptt, rng)
        else:
            self.windows = fixed_windows(self.row_length, self.bptt)

    def batches_for_epoch(self, dataset, epoch: int) -> List[List[int]]:
        """The batch sampler: one window per batch, in order."""
        self.set_epoch(epoch)
        return [[i] for i in range(len(self.windows))]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> int:
        return index

    def num_tokens(self, index: int) -> int:
        return self.windows[index].length * self.rows.size(0)

    def size(self, index: int) -> int:
        return self.windows[index].length

    def collater(self, indices: List[int]) -> dict:
        (index,) = indices
        w = self.windows[index]
        src = self.rows[:, w.start : w.start + w.length].contiguous()
        tgt = self.rows[:, w.start + 1 : w.start + 1 + w.length].contiguous()
        return {
            "id": torch.arange(self.rows.size(0)),
            "nsentences": self.rows.size(0),
            "ntokens": tgt.numel(),
            "net_input": {
                "src_tokens": src,
                "src_lengths": torch.full((src.size(0),), w.length, dtype=torch.long),
                "stream": self.stream_name,
                "reset": index == 0,
            },
            "target": tgt,
            "lr_scale": w.lr_scale,
        }
