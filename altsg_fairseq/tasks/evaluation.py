"""fairseq-eval-lm with ``alternating_lm``: its rows, what the neural cache did, and the
whole split's figures when several processes (or --num-shards) share the scoring."""

import logging
from typing import Optional

import torch

from .. import distributed
from ..errors import UsageError
from ..modules import CachePointer
from ..patching import Patch, in_place

logger = logging.getLogger(__name__)


def evaluation_rows(batch_size: Optional[int], max_tokens: Optional[int]) -> int:
    """The rows fairseq-eval-lm scores: ``--batch-size`` (1 when it is not given).

    ``--max-tokens`` cannot set them: each row is a contiguous stream scored
    window by window, so the rows, not the tokens, make a batch.
    """
    if batch_size is None and max_tokens is not None:
        raise UsageError(
            f"--max-tokens {max_tokens} does not apply to alternating_lm, which scores --batch-size "
            f"contiguous rows: pass --batch-size N (1 scores the split as one stream, the original code's test)"
        )
    if batch_size is not None and max_tokens is not None:
        logger.warning(f"--max-tokens {max_tokens} is ignored: alternating_lm scores --batch-size {batch_size} rows")
    return batch_size or 1


def describe_cache(cache: CachePointer) -> str:
    when = "once it holds a full window" if cache.full_window_only else "from a row's second word"
    return f"cache pointer on: window {cache.window}, theta {cache.theta:g}, lambda {cache.lam:g}, mixed in {when}"


class CacheReport:
    """fairseq-eval-lm's batch iterator, which says after the last batch how many
    targets the cache pointer was mixed into (a warning when none: the rows are
    shorter than its window)."""

    def __init__(self, iterator, cache: CachePointer, row_length: int):
        self.iterator, self.cache, self.row_length = iterator, cache, row_length

    def __len__(self):
        return len(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)

    def __iter__(self):
        mixed, scored = self.cache.mixed, self.cache.scored
        yield from self.iterator
        mixed, scored = self.cache.mixed - mixed, self.cache.scored - scored
        if mixed == 0 and self.cache.lam > 0:
            logger.warning(
                f"the cache pointer was mixed into none of the {scored:,} targets: the rows have "
                f"{self.row_length:,} tokens, its window {self.cache.window:,} is never full; "
                f"lower --cache-window, use fewer rows (--batch-size) or pass --cache-early"
            )
        else:
            logger.info(f"the cache pointer was mixed into {mixed:,} of the {scored:,} targets")


class TokenCount:
    """A batch iterator that counts the target tokens it serves (``tokens``)."""

    def __init__(self, iterator):
        self.iterator, self.tokens = iterator, 0

    def __len__(self):
        return len(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)

    def __iter__(self):
        for sample in self.iterator:
            if "net_input" in sample:
                self.tokens += int(sample["ntokens"])
            yield sample


def eval_lm(models, source_dictionary, batch_iterator, *args, **kwargs):
    """fairseq-eval-lm's scoring of this process's rows, then, with several processes, the whole
    split's figures: each process's mean loss (bits per token) weighted by its tokens, summed over
    the processes (fairseq prints its own shard's as the split's)."""
    counted = TokenCount(batch_iterator)
    results = RUN_PATCHES[0].original(models, source_dictionary, counted, *args, **kwargs)
    if distributed.world_size() == 1:
        return results
    # float64: the bits of the whole split, and its tokens
    sums = torch.tensor([results["loss"] * counted.tokens, float(counted.tokens)], dtype=torch.float64)
    distributed.all_reduce_sum(sums)
    loss = sums[0].item() / max(sums[1].item(), 1.0)
    logger.info(
        f"{distributed.world_size()} processes scored {int(sums[1].item()):,} tokens, each its block of the "
        f"rows: the figures below are the whole split's"
    )
    return dict(results, loss=loss, perplexity=2**loss)


def eval_main(main, cfg, **kwargs):
    """fairseq-eval-lm's ``main`` on one process, with ``eval_lm`` summing over the processes.
    --num-shards without several processes scores one shard: said in one line."""
    shards, shard = cfg.dataset.num_shards, cfg.dataset.shard_id
    processes = cfg.distributed_training.distributed_world_size
    if processes > 1 and cfg.common_eval.post_process:
        # fairseq then scores words, not tokens, and does not say how many: the sum would be wrong
        raise UsageError(
            f"--post-process {cfg.common_eval.post_process} with {processes} processes: score on one process "
            f"(the figures of several are summed per token)"
        )
    if shards > 1 and processes > 1:
        raise UsageError(
            f"--num-shards {shards} with {processes} processes: the processes already share the rows "
            f"(each scores its block); leave --num-shards out"
        )
    if shards > 1:
        logger.warning(
            f"--num-shards {shards} --shard-id {shard}: the figures below are of shard {shard} of {shards} "
            f"(1/{shards} of the rows), not of the whole split; run on {shards} processes "
            f"(torchrun --nproc-per-node {shards}) for the split's"
        )
    with in_place(RUN_PATCHES):
        results = main(cfg, **kwargs)
    distributed.close_together()
    return results


# fairseq-eval-lm's own function replaced while it runs (fairseq_patches names it with the others)
RUN_PATCHES = (
    Patch(
        "fairseq_cli.eval_lm",
        "eval_lm",
        eval_lm,
        (
            "models",
            "source_dictionary",
            "batch_iterator",
            "post_process",
            "output_word_probs",
            "output_word_stats",
            "target_dictionary",
            "softmax_batch",
            "remove_bos_token",
            "device",
        ),
        "every process scores its block of the rows and fairseq prints that shard's loss as the split's: the "
        "loss weighted by tokens, summed over the processes",
    ),
)
