"""Contiguous rows of a token stream, served one BPTT window at a time."""

import logging
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, iterators

from ..errors import UsageError

logger = logging.getLogger(__name__)


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


def fixed_windows(row_length: int, bptt: int, start: int = 0) -> List[Window]:
    """Windows of ``bptt`` inputs (the last one shorter) covering every target from ``start`` on."""
    return [Window(i, min(bptt, row_length - 1 - i), 1.0) for i in range(start, row_length - 1, bptt)]


def random_windows(row_length: int, bptt: int, rng: np.random.Generator, start: int = 0) -> List[Window]:
    """The AWD training windows (docs/method.md#data-and-training-windows), from position ``start`` on.

    The base length is ``bptt`` with probability 0.95, else ``bptt / 2``; the
    length is max(5, int(Normal(base, 5))), clipped to the end of the row.
    The learning rate of the step is scaled by the sampled length / bptt.
    """
    windows, i = [], start
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
        self.num_rows = rows_per_worker * num_workers
        self.row_length = len(stream) // self.num_rows
        rows = stream.tokens[: self.row_length * self.num_rows].view(self.num_rows, self.row_length)
        self.rows = rows[rank * rows_per_worker : (rank + 1) * rows_per_worker].contiguous()
        self.bptt = bptt
        self.stream_name = stream.name
        self.training = training
        self.seed = seed
        self.resume: Optional[tuple] = None  # (epoch, windows done, position): see resume_at
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.training:
            rng = np.random.default_rng([self.seed, epoch])
            self.windows = random_windows(self.row_length, self.bptt, rng)
        else:
            self.windows = fixed_windows(self.row_length, self.bptt)
        if self.resume is not None and self.resume[0] == epoch:
            _, done, position = self.resume
            if done >= len(self.windows) or self.windows[done].start != position:
                # the windows of the rest of the epoch start at the token the checkpoint
                # reached (they differ when --bptt changed); the first `done` are skipped
                if self.training:
                    rng = np.random.default_rng([self.seed, epoch, position])
                    rest = random_windows(self.row_length, self.bptt, rng, start=position)
                else:
                    rest = fixed_windows(self.row_length, self.bptt, start=position)
                skipped = self.windows[:done] + [Window(position, 0, 0.0)] * (done - len(self.windows))
                self.windows = skipped + rest

    def position(self, done: int) -> int:
        """The first input token of window ``done`` in every row (the row's end after the last window)."""
        return self.windows[done].start if done < len(self.windows) else self.row_length - 1

    def resume_at(self, epoch: int, done: int, position: int) -> None:
        """In ``epoch``, the first ``done`` windows are skipped and the rest start at token ``position``."""
        self.resume = (epoch, done, position)
        self.set_epoch(self.epoch)

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


class WindowIterator(iterators.EpochBatchIterator):
    """fairseq's epoch iterator over a ``BPTTWindowDataset``, whose saved state
    also holds the token position reached in every row and the global number
    of rows, so that a run resumed mid-epoch continues at the same token
    whatever ``--bptt`` is, and refuses another number of global rows."""

    def __init__(self, dataset: BPTTWindowDataset, epoch: int = 1):
        super().__init__(
            dataset=dataset,
            collate_fn=dataset.collater,
            batch_sampler=dataset.batches_for_epoch,
            epoch=epoch,
            disable_shuffling=True,
        )

    def state_dict(self):
        state = super().state_dict()
        done = state["iterations_in_epoch"]
        if done > 0:
            state.update(position=self.dataset.position(done), rows=self.dataset.num_rows, bptt=self.dataset.bptt)
        return state

    def load_state_dict(self, state_dict):
        done = state_dict.get("iterations_in_epoch", 0)
        data = self.dataset
        if done > 0 and "position" in state_dict:
            rows, position = state_dict["rows"], state_dict["position"]
            if rows != data.num_rows:
                raise UsageError(
                    f"the checkpoint stopped in the middle of epoch {state_dict['epoch']} with {rows} rows "
                    f"(--batch-size x workers), this run has {data.num_rows}: resume with {rows} rows in all, or pass "
                    f"--reset-dataloader to start the epoch afresh with zero state"
                )
            data.resume_at(state_dict["epoch"], done, position)
            self._frozen_batches = None  # made for the start of the epoch before the resume point was known
            bptt = (
                ""
                if state_dict.get("bptt") == data.bptt
                else f", windows of --bptt {data.bptt} (was {state_dict.get('bptt')})"
            )
            logger.info(
                f"resuming epoch {state_dict['epoch']} at token {position:,} of each of the "
                f"{rows} rows of {data.stream_name!r} (window {done + 1}){bptt}"
            )
        super().load_state_dict(state_dict)
