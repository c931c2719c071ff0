"""fairseq-eval-lm with ``alternating_lm``: its rows, and what the neural cache did."""

import logging
from typing import Optional

from ..errors import UsageError
from ..modules import CachePointer

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
