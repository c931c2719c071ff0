"""The data-parallel facts the plugin needs from fairseq, in one place."""

import torch
from fairseq import distributed_utils


def world_size() -> int:
    """The number of data-parallel workers (1 without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return 1
    return distributed_utils.get_data_parallel_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over the data-parallel workers, in place (nothing with one worker)."""
    if world_size() > 1:
        torch.distributed.all_reduce(tensor, group=distributed_utils.get_data_parallel_group())


def is_first_worker() -> bool:
    """Whether this process is the first worker (the one that writes shared files)."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
