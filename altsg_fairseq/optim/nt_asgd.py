"""``nt_asgd``: AWD-LSTM's non-monotonically triggered averaged SGD (Merity et al., 2017, section 3).

Plain SGD (weight decay as an L2 term, no momentum) until an end-of-epoch
validation loss is worse than the best of all such validations but the last
``--nonmono`` (awd-lstm-lm validates once an epoch: validations in the
middle of one, e.g. with ``--save-interval-updates``, are not counted); from
then on averaged SGD: SGD steps, and the average of the iterates kept beside
the weights. It is torch.optim.ASGD with t0 = 0 and lambd = 0, as
awd-lstm-lm switches to it, quirks included: each step's size is the lr of
the step before, and the running average starts over at its second step
(ax = p_1, then p_2, then (p_2 + p_3) / 2, (p_2 + p_3 + p_4) / 3, ...).
Validation and the checkpoints written after it use the averages (the task
swaps them in before validating and swaps the iterates back before the next
update); the averages, the iterates saved during such a swap, the switch and
the history of validation losses all live in the optimizer's state, which
fairseq keeps in every checkpoint, so a resumed run continues exactly.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer
from omegaconf import II
from torch.optim import Optimizer

from ..errors import UsageError

logger = logging.getLogger(__name__)


class NTASGD(Optimizer):
    """SGD that turns into averaged SGD when validation stops improving.

    Args:
        params: the parameters.
        lr: the learning rate (AWD: 30); weight_decay: the L2 term added to
            the gradient (AWD: 1.2e-6).
        nonmono: how many of the latest validations the trigger leaves out
            (AWD: 5): it fires when a validation loss is worse than the best
            of the ones before those.
        average_from_start: average from the first step (awd-lstm-lm's
            finetune.py).

    ``observe(loss)`` takes each validation loss; ``use_averages()`` /
    ``use_iterates()`` swap the averages into the parameters and back.
    """

    def __init__(
        self, params, lr: float, weight_decay: float = 0.0, nonmono: int = 5, average_from_start: bool = False
    ):
        if lr < 0 or weight_decay < 0 or nonmono < 0:
            raise ValueError(f"lr, weight_decay and nonmono must be >= 0, got {lr}, {weight_decay}, {nonmono}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        # the switch and the history ride in the first parameter group, so that state_dict() keeps them
        self.param_groups[0].update(nonmono=nonmono, averaging=average_from_start, history=[])
        self._average_from_start = average_from_start

    @property
    def averaging(self) -> bool:
        return self.param_groups[0]["averaging"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                if self.averaging:
                    self._averaged_step(p, update, group["lr"])
                else:
                    p.add_(update, alpha=-group["lr"])
        return loss

    def _averaged_step(self, p, update, lr: float) -> None:
        """torch.optim.ASGD's step with t0 = 0, lambd = 0: its step size eta is the lr of the
        step before (it is set after each step; the first is the lr then), and the average
        weighs the new iterate by mu, then mu = 1 / max(1, step)."""
        state = self.state[p]
        if "ax" not in state:
            state.update(step=0, eta=stored(lr), mu=1.0, ax=torch.zeros_like(p))
        state["step"] += 1
        p.add_(update, alpha=-state["eta"])
        if state["mu"] != 1:
            state["ax"].add_(p.sub(state["ax"]).mul_(state["mu"]))
        else:
            state["ax"].copy_(p)
        state["eta"], state["mu"] = stored(lr), stored(1.0 / max(1, state["step"]))

    def observe(self, loss: float, epoch: Optional[int] = None) -> bool:
        """Take a validation loss of the iterates; switch to averaging when it is worse than the
        best but the last ``nonmono`` ones. Returns whether it switched now. awd-lstm-lm validates
        once an epoch: the task hands it the end-of-epoch validations only (``epoch``: which one)."""
        group = self.param_groups[0]
        if group["averaging"]:
            return False
        history, nonmono = group["history"], group["nonmono"]
        switch = len(history) > nonmono and loss > min(history[: len(history) - nonmono])
        history.append(float(loss))
        if switch:
            group["averaging"] = True
            which = f"validation {len(history)}" + ("" if epoch is None else f" (end of epoch {epoch})")
            logger.info(
                f"{which}: {loss:.4f} is worse than {min(history[: -1 - nonmono]):.4f}, the best "
                f"before the last {nonmono}: averaged SGD from now on"
            )
        return switch

    @torch.no_grad()
    def use_averages(self) -> None:
        """Swap the averages into the parameters (keeping the iterates) for validation and saving."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "ax" in state and "iterate" not in state:
                    state["iterate"] = p.detach().clone()
                    p.copy_(state["ax"])

    @torch.no_grad()
    def use_iterates(self) -> None:
        """Swap the iterates back (before the next update)."""
        for group in self.param_groups:
            for p in group["params"]:
                iterate = self.state[p].pop("iterate", None)
                if iterate is not None:
                    p.copy_(iterate)

    def load_state_dict(self, state_dict) -> None:
        """As torch's; a checkpoint written while the averages were swapped in holds the
        iterates in the state (and the averages as weights): they go back into the parameters.
        This run's ``nonmono`` and ``average_from_start`` apply from here on (torch's loading
        would take the checkpoint's), with a line when they change what the checkpoint did."""
        nonmono = self.param_groups[0]["nonmono"]
        super().load_state_dict(state_dict)
        group = self.param_groups[0]
        if group["nonmono"] != nonmono:
            logger.warning(f"--nonmono {nonmono} from here on (the checkpoint's run had {group['nonmono']})")
            group["nonmono"] = nonmono
        if self._average_from_start and not group["averaging"]:
            logger.info(
                "--average-from-start: averaged SGD from this update on (the checkpoint's run had not switched)"
            )
            group["averaging"] = True
        self.use_iterates()


def stored(value: float) -> float:
    """A number as torch.optim.ASGD keeps eta and mu: in a tensor of the default dtype (float32)."""
    return torch.as_tensor(value).item()


def find(optimizer) -> Optional[NTASGD]:
    """The NTASGD inside fairseq's optimizer wrappers, or None.

    Raises UsageError for NTASGD under fairseq's half-precision wrappers: their
    optimizer steps a float32 copy of the weights, so swapping the averages in
    would not reach the model that validation and the checkpoints use."""
    half = False
    for _ in range(4):
        if isinstance(optimizer, NTASGD) or optimizer is None:
            if optimizer is not None and half:
                raise UsageError(
                    "--optimizer nt_asgd does not work with --fp16 / --bf16 (their float32 copy of the "
                    "weights would keep the averages from the model): train in float32 or with --amp"
                )
            return optimizer
        half = half or isinstance(optimizer, (FP16Optimizer, MemoryEfficientFP16Optimizer))
        optimizer = getattr(optimizer, "fp32_optimizer", None) or getattr(optimizer, "_optimizer", None)
    return None


@dataclass
class NTASGDConfig(FairseqDataclass):
    weight_decay: float = field(
        default=0.0, metadata={"help": "L2 penalty added to the gradient (alternate_sg's --wdecay; AWD: 1.2e-6)"}
    )
    nonmono: int = field(
        default=5,
        metadata={
            "help": "switch to averaged SGD when an end-of-epoch validation loss is worse than the best of all but the last N of them (awd-lstm-lm's --nonmono; validations in the middle of an epoch, from --save-interval-updates or --validate-interval-updates, are not counted)"
        },
    )
    average_from_start: bool = field(
        default=False,
        metadata={
            "help": "average from the first update (awd-lstm-lm's finetune.py: continue a trained checkpoint with averaged SGD)"
        },
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("nt_asgd", dataclass=NTASGDConfig)
class FairseqNTASGD(FairseqOptimizer):
    """fairseq's face of NTASGD; ``--task alternating_lm`` drives its switch and swaps."""

    def __init__(self, cfg: NTASGDConfig, params):
        super().__init__(cfg)
        self._optimizer = NTASGD(
            params, **self.optimizer_config, nonmono=cfg.nonmono, average_from_start=cfg.average_from_start
        )

    @property
    def optimizer_config(self) -> dict:
        return {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}
