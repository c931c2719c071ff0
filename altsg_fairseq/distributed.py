"""The data-parallel facts and collectives the plugin needs from fairseq, in one place.

Data-parallel workers own contiguous blocks of the global rows, in rank
order: worker r of N, with b rows each, owns rows [r * b, (r + 1) * b).
``DataParallelRows`` gathers a per-row tensor of every worker into the global
rows and takes a worker's block back out of them.
"""

import logging
import os
import random
import subprocess

import torch
from fairseq.distributed import utils as distributed_utils

from .errors import UsageError
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
    _all_reduce(tensor, torch.distributed.ReduceOp.SUM)


def all_reduce_max(value: int) -> int:
    """The largest of every worker's ``value`` (``value`` itself with one worker); a collective."""
    tensor = torch.tensor([value], dtype=torch.int64)
    _all_reduce(tensor, torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def _all_reduce(tensor: torch.Tensor, op) -> None:
    if world_size() == 1:
        return
    group = distributed_utils.get_data_parallel_group()
    if tensor.device.type == "cpu" and torch.distributed.get_backend(group) == "nccl":
        # NCCL reduces only GPU tensors: a copy on this worker's GPU, then back
        on_gpu = tensor.cuda()
        torch.distributed.all_reduce(on_gpu, op=op, group=group)
        tensor.copy_(on_gpu)
        return
    torch.distributed.all_reduce(tensor, op=op, group=group)


def close_together() -> None:
    """At the end of a run every worker reaches: wait for all, then close the process group, so
    that no worker exits while another still holds its connections (gloo's threads then abort the
    other process: "terminate called without an active exception", exit -6). Nothing without one."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait until every data-parallel worker is here (nothing with one worker)."""
    all_reduce_max(0)


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
LAUNCH_DOCS = "docs/cluster.md"


def infer_init_method(cfg, force_distributed=False) -> None:
    """fairseq's set-up of the distributed launch, made to work or to stop in one line on machines without GPUs.

    fairseq counts workers in GPUs: without them it sets the world size to 1
    and ignores torchrun's and Slurm's processes, spawns no process for
    ``--distributed-init-method`` without ``--distributed-no-spawn`` (and exits
    0 having trained nothing), and calls CUDA for a device id. On a machine
    without GPUs every process started by torchrun or srun becomes one worker
    on the CPU (gloo, fairseq's legacy data-parallel wrapper: PyTorch's
    DistributedDataParallel as fairseq sets it up takes CUDA device ids), and a
    launch that cannot work stops in one line before any rendezvous. With GPUs
    fairseq's own set-up runs unchanged.
    """
    if getattr(cfg, "tpu", False):  # before fairseq spawns XLA processes for it
        refuse_xla_without_torch_xla("--bf16 (or --memory-efficient-bf16, --tpu)")
    if torch.cuda.device_count() > 0:
        return _fairseq_infer_init_method(cfg, force_distributed)
    if cfg.distributed_init_method is None:
        if all(key in os.environ for key in _TORCHRUN) and int(os.environ["WORLD_SIZE"]) > 1:
            _one_worker_per_process(cfg, int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), "env://", "torchrun")
        elif _slurm_tasks() > 1:
            _slurm_on_cpus(cfg)
        elif cfg.distributed_world_size > 1:
            raise UsageError(
                f"--distributed-world-size {cfg.distributed_world_size} on a machine without GPUs starts no worker "
                f"of its own: start one process per worker (torchrun --nproc-per-node "
                f"{cfg.distributed_world_size} fairseq-train ..., srun, or by hand with --distributed-init-method, "
                f"--distributed-rank and --distributed-no-spawn); see {LAUNCH_DOCS}"
            )
    if cfg.device_id > 0:
        raise UsageError(
            f"--device-id {cfg.device_id} names a GPU and this machine has none: leave --device-id out on CPUs"
        )
    return _fairseq_infer_init_method(cfg, force_distributed)


def check_spawn(cfg) -> None:
    """Before fairseq starts its processes (it infers the launch only without an init method): one
    line for an init method without --distributed-no-spawn on a machine without GPUs, where fairseq
    would start one process per GPU, none, and exit 0 having trained nothing."""
    if (
        torch.cuda.device_count() == 0
        and cfg.distributed_init_method is not None
        and not cfg.distributed_no_spawn
        and not getattr(cfg, "tpu", False)
    ):
        raise UsageError(
            f"--distributed-init-method without --distributed-no-spawn on a machine without GPUs: fairseq would "
            f"start one process per GPU, none here, and train nothing; add --distributed-no-spawn and start one "
            f"process per --distributed-rank (or use torchrun); see {LAUNCH_DOCS}"
        )


def _one_worker_per_process(cfg, world: int, rank: int, init_method: str, launcher: str) -> None:
    """Every process a launcher started as one CPU worker of one job."""
    cfg.distributed_init_method = init_method
    cfg.distributed_world_size = world
    cfg.distributed_rank = rank
    cfg.device_id = 0
    cfg.distributed_no_spawn = True  # the launcher started the processes
    changed = []
    if cfg.distributed_backend == "nccl":
        cfg.distributed_backend = "gloo"
        changed.append("--distributed-backend gloo")
    if cfg.ddp_backend in ("pytorch_ddp", "c10d"):
        cfg.ddp_backend = "legacy_ddp"
        changed.append("--ddp-backend legacy_ddp")
    if changed and rank == 0:
        logger.info(f"{launcher} without GPUs: {world} workers on the CPU with {', '.join(changed)}")


def _slurm_tasks() -> int:
    """The tasks of the srun job step this process is one of (0 outside one: a batch script that runs
    fairseq-train itself is one process, whatever --ntasks the job has)."""
    if "SLURM_PROCID" not in os.environ or "SLURM_STEP_NUM_TASKS" not in os.environ:
        return 0
    return int(os.environ["SLURM_STEP_NUM_TASKS"])


def _slurm_on_cpus(cfg) -> None:
    """srun's tasks as the workers of one job: rank SLURM_PROCID, the first host of the step's nodes
    (``scontrol show hostnames``, as fairseq reads it) as the rendezvous, a port from --distributed-port
    or, as fairseq picks it, from the job's id."""
    tasks = _slurm_tasks()
    if cfg.distributed_world_size not in (1, tasks):
        raise UsageError(
            f"--distributed-world-size {cfg.distributed_world_size}, but srun started {tasks} tasks "
            f"(SLURM_STEP_NUM_TASKS): one worker per task; leave --distributed-world-size out or make them agree"
        )
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
    hosts, why = [], "SLURM_STEP_NODELIST and SLURM_JOB_NODELIST are not set"
    if nodes:
        try:
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True, timeout=60
            ).stdout.split()
            why = f"scontrol show hostnames {nodes} printed none"
        except (OSError, subprocess.SubprocessError) as e:
            why = f"scontrol show hostnames {nodes}: {e}"
    if not hosts:
        raise UsageError(
            f"Slurm job step of {tasks} tasks: cannot find its first node ({why}); launch the workers by hand "
            f"(--distributed-init-method tcp://HOST:PORT --distributed-world-size {tasks} --distributed-rank "
            f"$SLURM_PROCID --distributed-no-spawn) or with torchrun; see {LAUNCH_DOCS}"
        )
    port = cfg.distributed_port
    if port <= 0:
        job = os.environ.get("SLURM_JOB_ID", "0") + os.environ.get("SLURM_ARRAY_TASK_ID", "")
        port = random.Random(int(job)).randint(10000, 60000)  # every task of the job picks the same
    _one_worker_per_process(cfg, tasks, int(os.environ["SLURM_PROCID"]), f"tcp://{hosts[0]}:{port}", "srun")
