"""The data-parallel facts and collectives the plugin needs from fairseq, in one place.

Data-parallel workers own contiguous blocks of the global rows, in rank
order: worker r of N, with b rows each, owns rows [r * b, (r + 1) * b).
``DataParallelRows`` gathers a per-row tensor of every worker into the global
rows and takes a worker's block back out of them.
"""

import logging
import os

import torch
from fairseq.distributed import utils as distributed_utils

from .flags import refuse_xla_without_torch_xla

logger = logging.getLogger(__name__)


def world_size() -> int:
    """The number of data-parallel workers (1 without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return 1
    return distributed_utils.get_data_parallel_world_size()


def rank() -> int:
    """This worker's data-parallel rank (0 without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return 0
    return distributed_utils.get_data_parallel_rank()


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over the data-parallel workers, in place (nothing with one worker)."""
    if world_size() > 1:
        torch.distributed.all_reduce(tensor, group=distributed_utils.get_data_parallel_group())


def all_reduce_max(value: int) -> int:
    """The largest of every worker's ``value`` (``value`` itself with one worker); a collective."""
    if world_size() == 1:
        return value
    group = distributed_utils.get_data_parallel_group()
    # NCCL reduces only GPU tensors
    device = "cuda" if torch.distributed.get_backend(group) == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX, group=group)
    return int(tensor.item())


def is_first_worker() -> bool:
    """Whether this process is the first worker (the one that writes shared files)."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


class DataParallelRows:
    """Per-row tensors of all data-parallel workers as the global rows, and back.

    ``gather(t, dim)``: every worker's t (rows along ``dim``) concatenated in
    rank order, on every worker (a collective: every worker must call it).
    ``mine(t, dim)``: this worker's block of the global rows of t.
    With one worker both return t.
    """

    def __init__(self):
        self.world, self.rank = world_size(), rank()

    def gather(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t, group=distributed_utils.get_data_parallel_group())
        return torch.cat(parts, dim)

    def mine(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if self.world == 1:
            return t
        size = t.size(dim) // self.world
        return t.narrow(dim, self.rank * size, size)


_fairseq_infer_init_method = distributed_utils.infer_init_method
_TORCHRUN = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def infer_init_method(cfg, force_distributed=False) -> None:
    """fairseq's set-up of the distributed launch, also for torchrun on machines without GPUs.

    fairseq sets the world size to the number of GPUs (1 without them) and
    then ignores torchrun's processes; where there is a GPU it picks the
    device as RANK % the number of GPUs. Without GPUs, under torchrun, every
    process becomes one worker on the CPU, with the gloo backend (NCCL needs
    GPUs) and fairseq's legacy data-parallel wrapper (PyTorch's
    DistributedDataParallel as fairseq sets it up takes CUDA device ids).
    """
    if getattr(cfg, "tpu", False):  # before fairseq spawns XLA processes for it
        refuse_xla_without_torch_xla("--bf16 (or --memory-efficient-bf16, --tpu)")
    torchrun = all(key in os.environ for key in _TORCHRUN) and int(os.environ["WORLD_SIZE"]) > 1
    if not torchrun or torch.cuda.device_count() > 0 or cfg.distributed_init_method is not None:
        return _fairseq_infer_init_method(cfg, force_distributed)
    cfg.distributed_init_method = "env://"
    cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
    cfg.distributed_rank = int(os.environ["RANK"])
    cfg.device_id = 0
    cfg.distributed_no_spawn = True  # torchrun started the processes
    changed = []
    if cfg.distributed_backend == "nccl":
        cfg.distributed_backend = "gloo"
        changed.append("--distributed-backend gloo")
    if cfg.ddp_backend in ("pytorch_ddp", "c10d"):
        cfg.ddp_backend = "legacy_ddp"
        changed.append("--ddp-backend legacy_ddp")
    if changed and cfg.distributed_rank == 0:
        logger.info(f"torchrun without GPUs: {cfg.distributed_world_size} workers on the CPU with {', '.join(changed)}")
