"""The flags of ``alternating_lm`` (their help strings are the docs) and their checks."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..dni import CORES, TARGETS
from ..errors import UsageError
from ..flags import checked, refuse_xla_without_torch_xla
from ..modules.forget_mult import BackendUnavailable, check_backend
from ..schedule import check_epochs


@dataclass
class AlternatingLMConfig(FairseqDataclass):
    data: Optional[str] = field(
        default=None,
        metadata={"help": "directory of fairseq-preprocess --only-source output (dict.txt, train.bin/.idx, ...)"},
    )
    bptt: int = field(
        default=70,
        metadata={
            "help": "base window length of truncated BPTT; training windows vary around it (the published runs use 200)"
        },
    )
    use_sg: bool = field(
        default=False,
        metadata={
            "help": "train a synthesizer of the gradient at the carried state (DNI); it injects synthetic gradients in synthetic phases"
        },
    )
    sg_type: ChoiceEnum(CORES) = field(default="qrnn", metadata={"help": "recurrent core of the synthesizer"})
    sg_hidden: int = field(default=50, metadata={"help": "hidden size of the synthesizer's core"})
    sg_layers: int = field(default=1, metadata={"help": "layers of the synthesizer's core"})
    sg_dropout: float = field(default=0.1, metadata={"help": "dropout between the synthesizer core's layers"})
    sg_noise: float = field(
        default=0.5,
        metadata={
            "help": "standard deviation of the multiplicative Normal(1, std) noise on the synthesizer's inputs in training"
        },
    )
    sg_scale: float = field(
        default=0.1, metadata={"help": "factor of the synthetic gradient injected at the end state"}
    )
    sg_target: ChoiceEnum(TARGETS) = field(
        default="paper",
        metadata={
            "help": "'paper' (alternate_sg's): output gradient 2*(2*g_hat - g_true) in synthetic phases, 2*(g_hat - g_true) in real ones; 'dni': always the latter"
        },
    )
    sg_lr: float = field(
        default=1e-3,
        metadata={
            "help": "constant learning rate of the synthesizer's own Adam (its weight decay is the model optimizer's)"
        },
    )
    fix_sg: bool = field(default=False, metadata={"help": "freeze the synthesizer (no updates)"})
    resume_sg: Optional[str] = field(
        default=None,
        metadata={"help": "checkpoint of an earlier --use-sg run to take the synthesizer and its optimizer state from"},
    )
    whenswitch: List[int] = field(
        default_factory=list,
        metadata={"help": "epochs at whose start synthetic gradients are toggled on/off (off at first)"},
    )
    mixture: bool = field(
        default=False, metadata={"help": "alternate: toggle synthetic gradients at every warm restart (--restart-base)"}
    )
    restart_base: List[int] = field(
        default_factory=list,
        metadata={
            "help": "warm restarts: one value B restarts after epochs B, 2B, 4B, ...; several are the restart epochs. Read by --mixture and warm_restarts' --restart-lr"
        },
    )
    cache_window: int = field(
        default=0,
        metadata={
            "help": "fairseq-eval-lm: mix the softmax with a neural cache of each row's last N (hidden state, next word) pairs; 0: off (alternate_sg's pointer.py: 3785)"
        },
    )
    cache_theta: float = field(
        default=0.6625,
        metadata={"help": "inverse temperature of the cache's attention over past hidden states (pointer.py --theta)"},
    )
    cache_lambda: float = field(
        default=0.1279, metadata={"help": "weight of the cache distribution in the mixture (pointer.py --lambdasm)"}
    )
    cache_early: bool = field(
        default=False,
        metadata={
            "help": "mix the cache in as soon as it holds one word; alternate_sg's pointer.py waits until it holds --cache-window words"
        },
    )
    stop_signals: str = field(
        default="SIGTERM,SIGUSR1",
        metadata={
            "help": "signals (comma-separated) on which fairseq-train saves a resumable checkpoint at the next update and "
            "exits with status 75; 'none' leaves signals alone"
        },
    )
    requeue: bool = field(
        default=False,
        metadata={"help": "after such a stop, the first worker runs scontrol requeue $SLURM_JOB_ID (Slurm)"},
    )
    seed: int = II("common.seed")
    lr: List[float] = II("optimization.lr")
    clip_norm: float = II("optimization.clip_norm")
    update_freq: List[int] = II("optimization.update_freq")
    batch_size: Optional[int] = II("dataset.batch_size")
    train_subset: str = II("dataset.train_subset")
    cpu: bool = II("common.cpu")
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    memory_efficient_bf16: bool = II("common.memory_efficient_bf16")
    amp: bool = II("common.amp")
    max_epoch: int = II("optimization.max_epoch")
    max_update: int = II("optimization.max_update")
    context_window: int = II("eval_lm.context_window")
    # fairseq-eval-lm changes task.tokens_per_sample for --context-window before
    # the task can refuse that flag: the window length under fairseq's name
    tokens_per_sample: int = II("task.bptt")
    softmax_batch: int = II("eval_lm.softmax_batch")
    save_dir: str = II("checkpoint.save_dir")
    no_save: bool = II("checkpoint.no_save")


LIST_FLAGS = ("whenswitch", "restart_base")
logger = logging.getLogger(__name__)


def check_config(cfg: AlternatingLMConfig) -> str:
    """Check the flags before anything is loaded; returns the data directory.

    Raises the one-line ``UsageError`` for every mistake it finds.
    """
    if cfg.bptt < 1:
        raise UsageError(f"--bptt must be at least 1, got {cfg.bptt}")
    checked(check_epochs, "--whenswitch", cfg.whenswitch)
    checked(check_epochs, "--restart-base", cfg.restart_base, increasing=True)
    if cfg.mixture and not cfg.restart_base:
        raise UsageError("--mixture toggles synthetic gradients at warm restarts: add --restart-base B [B ...]")
    sg_only = [
        flag
        for flag, on in [
            ("--whenswitch", cfg.whenswitch),
            ("--mixture", cfg.mixture),
            ("--fix-sg", cfg.fix_sg),
            ("--resume-sg", cfg.resume_sg),
        ]
        if on
    ]
    if sg_only and not cfg.use_sg:
        raise UsageError(f"{', '.join(sg_only)}: synthesizer options, they need --use-sg")
    if cfg.cache_window < 0 or cfg.cache_theta < 0 or not 0 <= cfg.cache_lambda <= 1:
        raise UsageError(
            f"--cache-window and --cache-theta must be >= 0 and --cache-lambda in [0, 1], "
            f"got {cfg.cache_window}, {cfg.cache_theta}, {cfg.cache_lambda}"
        )
    if cfg.use_sg and min(cfg.sg_hidden, cfg.sg_layers) < 1:
        raise UsageError(f"--sg-hidden and --sg-layers must be at least 1, got {cfg.sg_hidden} and {cfg.sg_layers}")
    try:
        check_backend()
    except (ValueError, BackendUnavailable) as e:
        raise UsageError(str(e)) from None
    check_evaluation_and_precision(cfg)
    if not cfg.data:
        raise UsageError("no data directory given; pass the fairseq-preprocess --destdir as the first argument")
    data = cfg.data.split(os.pathsep)[0]
    if os.path.exists(data) and not os.path.isdir(data):
        raise UsageError(
            f"data directory {data!r} is a file: give the --destdir folder of fairseq-preprocess --only-source"
        )
    if not os.path.isdir(data):
        raise UsageError(
            f"data directory {data!r} does not exist; run fairseq-preprocess --only-source --destdir {data} first"
        )
    if not os.path.isfile(os.path.join(data, "dict.txt")):
        raise UsageError(f"no dict.txt in {data!r}; it must be the --destdir of fairseq-preprocess --only-source")
    return data


def check_evaluation_and_precision(cfg: AlternatingLMConfig) -> None:
    """Flags of fairseq's tools that do not apply here: one line each, before they could fail deep inside."""
    if cfg.context_window > 0:
        raise UsageError(
            "--context-window does not apply to alternating_lm: it carries the recurrent state across "
            "windows instead (--bptt sets their length); leave it out"
        )
    if cfg.cache_window > 0 and cfg.softmax_batch < sys.maxsize:
        raise UsageError(
            "--softmax-batch splits the windows that the cache pointer (--cache-window) scores whole: "
            "leave one of them out"
        )
    # fairseq turns --bf16 (and --memory-efficient-bf16, which sets it) into --tpu: an XLA device,
    # which needs torch_xla, and no Slurm/torchrun detection (fairseq#4696)
    if cfg.bf16 or cfg.memory_efficient_bf16:
        refuse_xla_without_torch_xla("--memory-efficient-bf16" if cfg.memory_efficient_bf16 else "--bf16")
    half = [flag for flag, on in [("--memory-efficient-fp16", cfg.memory_efficient_fp16), ("--fp16", cfg.fp16)] if on]
    if half and on_cpu(cfg):
        raise UsageError(
            f"{half[0]} needs a GPU (fairseq's float16 training runs on CUDA devices); "
            f"on a CPU use --amp (bfloat16 autocast) or leave it out (float32)"
        )


def on_cpu(cfg: AlternatingLMConfig) -> bool:
    """Whether the run is on the CPU (--cpu, or no GPU)."""
    return cfg.cpu or not torch.cuda.is_available()


def autocast_dtype(cfg: AlternatingLMConfig) -> Optional[torch.dtype]:
    """The dtype the model's forward pass autocasts to by the plugin: bfloat16 for
    --amp on a CPU (fairseq's --amp autocasts on CUDA devices only), else None."""
    return torch.bfloat16 if cfg.amp and on_cpu(cfg) else None


def describe_precision(cfg: AlternatingLMConfig) -> str:
    """One line saying in which precision the model runs."""
    kept = "weights, optimizer state, carried state, losses and the synthesizer in float32"
    if autocast_dtype(cfg) is not None:
        return f"precision: bfloat16 autocast on the CPU (--amp): matrix products in bfloat16; {kept}"
    if cfg.amp:
        return f"precision: fairseq's float16 autocast on the GPU (--amp); {kept}"
    if cfg.fp16 or cfg.memory_efficient_fp16:
        return "precision: float16 (--fp16); the synthesizer in float32"
    return "precision: float32"
