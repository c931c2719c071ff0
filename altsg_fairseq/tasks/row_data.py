"""The task's data: each split one token stream, cut into rows read a window at a time."""

import logging
import os
from typing import Optional

import torch
from fairseq.data import data_utils

from ..errors import UsageError
from .bptt_windows import BPTTWindowDataset, TokenStream, WindowIterator
from .evaluation import CacheReport, evaluation_rows

logger = logging.getLogger(__name__)


class ContiguousRowData:
    """Loading and batching for the task (``self.cfg``, ``self.dictionary``,
    ``self.datasets``, ``self.cache_pointer``): each split's lines become one
    stream, cut into ``--batch-size`` rows (``--batch-size-valid`` for
    validation, the eval-lm batch size for evaluation); a batch is the next
    window of every row."""

    _warned_rows: set
    _train_epochs = None  # the training split's epoch iterator (the latest fairseq asked for)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """Load ``split`` as one token stream (lines in order, eos after each)."""
        data = self.cfg.data.split(os.pathsep)[0]
        path = os.path.join(data, split)
        # fairseq-preprocess binarizes an empty text file without a word of warning, into an empty .bin
        # that fairseq's reader cannot open (ValueError: cannot mmap an empty file)
        empty = os.path.isfile(f"{path}.bin") and os.path.getsize(f"{path}.bin") == 0
        lines = None if empty else data_utils.load_indexed_dataset(path, self.dictionary)
        if empty or (lines is not None and len(lines) == 0):
            raise UsageError(
                f"split {split!r} in {data!r} is empty ({split}.bin holds no tokens: its text file was empty when "
                f"fairseq-preprocess binarized it); put text in that file and binarize it again"
            )
        if lines is None:
            raise UsageError(
                f"split {split!r} is not in {data!r} (no {split}.bin/{split}.idx); "
                f"binarize it with fairseq-preprocess --only-source (--trainpref/--validpref/--testpref)"
            )
        stream = torch.cat([lines[i] for i in range(len(lines))]).long()
        if bool((stream == self.dictionary.eos()).all()):
            raise UsageError(
                f"split {split!r} in {data!r} holds only empty lines ({len(lines):,} of them, not a word); "
                f"put text in its text file and binarize it again"
            )
        if int(stream.max()) >= len(self.dictionary):
            raise UsageError(
                f"{path}.bin holds token ids beyond dict.txt ({len(self.dictionary)} types): the data was binarized with another dictionary"
            )
        self.datasets[split] = TokenStream(split, stream)
        logger.info(f"{split}: {stream.numel():,} tokens")

    def dataset(self, split: str):
        if split not in self.datasets:
            raise KeyError(f"Dataset not loaded: {split}")
        return self.datasets[split]

    def _windows(
        self,
        stream: TokenStream,
        rows: Optional[int],
        training: bool,
        num_shards: int = 1,
        shard_id: int = 0,
        epoch: int = 1,
        flag: str = "--batch-size",
    ):
        """The rows of ``stream`` (``flag`` is the option that sets them), one window of each per batch."""
        if rows is None or rows < 1:
            raise UsageError(
                f"the number of rows must be given and at least 1: pass --batch-size (and --batch-size-valid) N, got {rows}"
            )
        row_length = len(stream) // (rows * num_shards)
        if row_length < 2:
            most = len(stream) // (2 * num_shards)
            fix = f"lower {flag} (to at most {most})" if most else "binarize more text into it"
            raise UsageError(
                f"split {stream.name!r} has {len(stream):,} tokens, too few for {rows * num_shards} rows of at least 2 tokens; "
                f"{fix}"
            )
        if self.cfg.bptt >= row_length - 1 and stream.name not in self._warned_rows:
            self._warned_rows.add(stream.name)
            logger.warning(
                f"--bptt {self.cfg.bptt} is as long as the rows of {stream.name!r} ({row_length:,} tokens "
                f"each in {rows * num_shards} rows): each pass over them is one window; lower --bptt or {flag}"
            )
        dataset = BPTTWindowDataset(
            stream, rows, self.cfg.bptt, training=training, seed=self.cfg.seed, num_workers=num_shards, rank=shard_id
        )
        return WindowIterator(dataset, epoch)

    def get_batch_iterator(
        self,
        dataset,
        max_tokens=None,
        max_sentences=None,
        max_positions=None,
        ignore_invalid_inputs=False,
        required_batch_size_multiple=1,
        seed=1,
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
        **kwargs,
    ):
        if not isinstance(dataset, TokenStream):  # e.g. prompts for generation
            return super().get_batch_iterator(
                dataset,
                max_tokens,
                max_sentences,
                max_positions,
                ignore_invalid_inputs,
                required_batch_size_multiple,
                seed,
                num_shards,
                shard_id,
                num_workers,
                epoch,
                **kwargs,
            )
        training = dataset.name == self.cfg.train_subset
        flag = "--batch-size" if training else "--batch-size-valid"
        iterator = self._windows(dataset, max_sentences, training, num_shards, shard_id, epoch, flag=flag)
        if training:
            self._train_epochs = iterator
        return iterator

    def end_of_epoch(self) -> bool:
        """Whether the training pass under way has served its last window (fairseq-train's own test
        before its end-of-epoch validation and save); False before the first pass."""
        epochs = self._train_epochs
        return epochs is not None and getattr(epochs, "_cur_epoch_itr", None) is not None and epochs.end_of_epoch()

    def eval_lm_dataloader(
        self,
        dataset,
        max_tokens=36000,
        batch_size=None,
        max_positions=None,
        num_shards=1,
        shard_id=0,
        num_workers=1,
        data_buffer_size=10,
        context_window=0,
    ):
        iterator = self._windows(dataset, evaluation_rows(batch_size, max_tokens), False, num_shards, shard_id)
        batches = iterator.next_epoch_itr(shuffle=False)
        cache = self.cache_pointer
        return batches if cache is None else CacheReport(batches, cache, iterator.dataset.row_length)
