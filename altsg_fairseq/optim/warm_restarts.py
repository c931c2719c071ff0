"""``warm_restarts``: the original code's epoch-exact learning-rate schedule (docs/method.md#schedules)."""

import logging
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from ..errors import UsageError
from ..flags import checked, epochs_as_lists
from ..schedule import check_epochs, cosine_factor

logger = logging.getLogger(__name__)


@dataclass
class WarmRestartsConfig(FairseqDataclass):
    restart_lr: bool = field(
        default=False,
        metadata={
            "help": "cosine warm restarts: within each restart cycle the lr falls from --lr towards 0 (set once per epoch), back to --lr at each restart (--restart-base)"
        },
    )
    when: List[int] = field(
        default_factory=list, metadata={"help": "epochs after which the lr is multiplied by --decay-ratio"}
    )
    decay_ratio: float = field(default=0.1, metadata={"help": "lr factor applied after each --when epoch"})
    autodecay: int = field(
        default=0, metadata={"help": "halve the lr after this many epochs without a better validation loss (0: never)"}
    )
    restart_base: List[int] = II("task.restart_base")
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("warm_restarts", dataclass=WarmRestartsConfig)
class WarmRestartsSchedule(FairseqLRScheduler):
    """lr(epoch) = --lr x cosine(epoch within its restart cycle) x decays.

    The cosine factor applies with --restart-lr; the decays are --decay-ratio
    for every --when epoch already finished and 0.5 per --autodecay halving.
    """

    LIST_FLAGS = ("when",)

    def __init__(self, cfg: WarmRestartsConfig, optimizer):
        super().__init__(cfg, optimizer)
        if len(cfg.lr) > 1:
            raise UsageError("--lr-scheduler warm_restarts takes one --lr value")
        checked(check_epochs, "--when", cfg.when)
        if cfg.restart_lr and not cfg.restart_base:
            raise UsageError("--restart-lr needs --restart-base B [B ...] (the epochs of the warm restarts)")
        if cfg.autodecay < 0:
            raise UsageError(f"--autodecay must be 0 (off) or more, got {cfg.autodecay}")
        self.base_lr = cfg.lr[0]
        self.halvings = 0
        self.bad_epochs = 0
        self.epoch = 1
        self.optimizer.set_lr(self.lr_for_epoch(1))

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        epochs_as_lists(parser, cls.LIST_FLAGS)

    def lr_for_epoch(self, epoch: int) -> float:
        lr = self.base_lr * self.cfg.decay_ratio ** sum(1 for e in self.cfg.when if e < epoch)
        lr *= 0.5**self.halvings
        if self.cfg.restart_lr:
            lr *= cosine_factor(epoch, self.cfg.restart_base)
        return lr

    def step_begin_epoch(self, epoch):
        self.epoch = epoch
        self.optimizer.set_lr(self.lr_for_epoch(epoch))
        return self.optimizer.get_lr()

    def step(self, epoch, val_loss=None):
        if val_loss is not None and self.cfg.autodecay > 0:
            if self.best is None or val_loss < self.best:
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.cfg.autodecay:
                    self.halvings += 1
                    self.bad_epochs = 0
                    logger.info(f"autodecay: no better validation loss for {self.cfg.autodecay} epochs, halving the lr")
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        return self.optimizer.get_lr()

    def state_dict(self):
        return {"best": self.best, "halvings": self.halvings, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state_dict):
        self.best = state_dict.get("best")
        self.halvings = state_dict.get("halvings", 0)
        self.bad_epochs = state_dict.get("bad_epochs", 0)
