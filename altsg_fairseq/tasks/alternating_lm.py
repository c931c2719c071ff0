"""``alternating_lm``: stateful truncated-BPTT language modelling."""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.data import Dictionary, data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..errors import UsageError
from .bptt_windows import BPTTWindowDataset, TokenStream

logger = logging.getLogger(__name__)


@dataclass
class AlternatingLMConfig(FairseqDataclass):
    data: Optional[str] = field(default=None, metadata={"help": "directory of fairseq-preprocess --only-source output (dict.txt, train.bin/.idx, ...)"})
    bptt: int = field(default=70, metadata={"help": "base window length of truncated BPTT; training windows vary around it (the seed's runs use 200)"})
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")


@register_task("alternating_lm", dataclass=AlternatingLMConfig)
class AlternatingLMTask(FairseqTask):
    """Language modelling over contiguous rows with carried recurrent state.

    Each split's token stream is cut into ``--batch-size`` rows (``
    --batch-size-valid`` for validation); every update takes the next window
    of every row, and the model carries its state from one window to the
    next. The state restarts at the beginning of every pass over a split.
    """

    def __init__(self, cfg: AlternatingLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._lr_scales = []

    @classmethod
    def setup_task(cls, cfg: AlternatingLMConfig, **kwargs):
        if cfg.bptt < 1:
            raise UsageError(f"--bptt must be at least 1, got {cfg.bptt}")
        if not cfg.data:
            raise UsageError("no data directory given; pass the fairseq-preprocess --destdir as the first argument")
        data = cfg.data.split(os.pathsep)[0]
        if not os.path.isdir(data):
            raise UsageError(f"data directory {data!r} does not exist; run fairseq-preprocess --only-source --destdir {data} first")
        dict_path = os.path.join(data, "dict.txt")
        if not os.path.isfile(dict_path):
            raise UsageError(f"no dict.txt in {data!r}; it must be the --destdir of fairseq-preprocess --only-source")
        dictionary = Dictionary.load(dict_path)
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """Load ``split`` as one token stream (lines in order, eos after each)."""
        data = self.cfg.data.split(os.pathsep)[0]
        path = os.path.join(data, split)
        lines = data_utils.load_indexed_dataset(path, self.dictionary)
        if lines is None or len(lines) == 0:
            raise UsageError(
                f"split {split!r} is not in {data!r} (no {split}.bin/{split}.idx); "
                f"binarize it with fairseq-preprocess --only-source (--trainpref/--validpref/--testpref)"
            )
        stream = torch.cat([lines[i] for i in range(len(lines))]).long()
        if int(stream.max()) >= len(self.dictionary):
            raise UsageError(f"{path}.bin holds token ids beyond dict.txt ({len(self.dictionary)} types): the data was binarized with another dictionary")
        self.datasets[split] = TokenStream(split, stream)
        logger.info(f"{split}: {stream.numel():,} tokens")

    def dataset(self, split: str):
        if split not in self.datasets:
            raise KeyError(f"Dataset not loaded: {split}")
        return self.datasets[split]

    def _windows(self, stream: TokenStream, rows: Optional[int], training: bool, num_shards: int = 1, shard_id: int = 0, epoch: int = 1):
        if rows is None or rows < 1:
            raise UsageError(f"the number of rows must be given and at least 1: pass --batch-size (and --batch-size-valid) N, got {rows}")
        row_length = len(stream) // (rows * num_shards)
        if row_length < 2:
            raise UsageError(
                f"split {stream.name!r} has {len(stream):,} tokens, too few for {rows * num_shards} rows of at least 2 tokens; "
                f"lower --batch-size"
            )
        dataset = BPTTWindowDataset(
            stream, rows, self.cfg.bptt, training=training, seed=self.cfg.seed,
            num_workers=num_shards, rank=shard_id,
        )
        return iterators.EpochBatchIterator(
            dataset=dataset,
            collate_fn=dataset.collater,
            batch_sampler=dataset.batches_for_epoch,
            epoch=epoch,
            disable_shuffling=True,
        )

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, **kwargs):
        training = dataset.name == self.cfg.train_subset
        return self._windows(dataset, max_sentences, training, num_shards, shard_id, epoch)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        if context_window > 0:
            raise UsageError("--context-window is not supported: alternating_lm carries the recurrent state across windows instead")
        return self._windows(dataset, batch_size or 1, False, num_shards, shard_id).next_epoch_itr(shuffle=False)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._lr_scales.append(sample.get("lr_scale", 1.0))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        """Step with the lr scaled by this update's window length / bptt."""
        scale = sum(self._lr_scales) / len(self._lr_scales) if self._lr_scales else 1.0
        self._lr_scales = []
        lr = optimizer.get_lr()
        optimizer.set_lr(lr * scale)
        optimizer.step()
        optimizer.set_lr(lr)

    def max_positions(self):
        return None

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary
