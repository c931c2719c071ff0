"""What a checkpoint of ``alternating_lm`` keeps besides the weights, the optimizer and the data position.

fairseq keeps the weights, the optimizer's state and the data iterator's
position (``WindowIterator`` adds the token position to it). The rest of the
run's state rides in the model's extra state, because fairseq saves
``task_state`` but never restores it:

- ``carried``: the training stream's carried state of every global row, in
  global row order (each worker holds only its rows: they are gathered
  before a save and each worker takes its block back on resume);
- the synthetic-gradient method's state (``BackwardInterface.state_dict``:
  its synthesizer sees all rows, so its state is the same on every worker);
- ``experiment``: the run's flags, compared with the resuming run's.

``TrainingState`` is the one owner of that state: the model reaches it by
name (``QRNNLanguageModel.run_state``) to save and restore it with the
weights, and fairseq-train's resume tells it that a run continues
(``resuming()``), so that changed flags are reported, and the learning curve
of the checkpoint's run kept apart, in one place.
"""

import logging
from contextlib import contextmanager
from enum import Enum
from typing import List, Optional

from omegaconf import OmegaConf

from ..distributed import DataParallelRows
from ..dni import BackwardInterface, SynthesizerMismatch
from ..errors import UsageError

logger = logging.getLogger(__name__)

# task flags that make an experiment (the data and cache flags do not)
TASK_FLAGS = (
    "bptt",
    "seed",
    "use_sg",
    "sg_type",
    "sg_hidden",
    "sg_layers",
    "sg_dropout",
    "sg_noise",
    "sg_scale",
    "sg_target",
    "sg_lr",
    "fix_sg",
    "whenswitch",
    "mixture",
    "restart_base",
    "lr",
    "clip_norm",
    "update_freq",
)


def plain(value):
    """omegaconf values (ListConfig, enums) as plain Python, for checkpoints and comparisons."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Enum):  # fairseq's choice flags
        return str(value.value)
    return value if isinstance(value, (int, float, str, bool, type(None), list)) else str(value)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# what fairseq keeps the optimizer's state for: it loads that state only into the same optimizer class (its
# precision wrapper included) beside the same criterion, and asserts so after the model's state has loaded
OPTIMIZER_STATE = ("--optimizer", "--criterion", "precision")
PRECISIONS = ("memory_efficient_fp16", "memory_efficient_bf16", "amp", "fp16", "bf16")  # fairseq's wrapper order


def experiment_flags(task_cfg, model_cfg, rows: int) -> dict:
    """The flags that define a training run: the model's, the task's experiment flags, the global rows,
    and the optimizer's, criterion's and lr scheduler's names (``training_components``)."""
    flags = {"--arch": plain(getattr(model_cfg, "_name", None)), "rows (--batch-size x workers)": rows}
    names = model_cfg.keys() if OmegaConf.is_config(model_cfg) else vars(model_cfg).keys()
    flags.update({flag(k): plain(getattr(model_cfg, k)) for k in names if not k.startswith("_")})
    flags.update({flag(k): plain(getattr(task_cfg, k)) for k in TASK_FLAGS})
    flags.update(training_components(task_cfg))
    return flags


def training_components(task_cfg) -> dict:
    """``--optimizer``, ``--criterion``, ``--lr-scheduler`` and the precision (``--amp``, ``--fp16``, ...,
    or float32: fairseq wraps the optimizer by it) of the run whose config holds ``task_cfg``; empty where
    the config has no optimizer (evaluation)."""
    root = task_cfg._get_root() if OmegaConf.is_config(task_cfg) else None
    if root is None or root.get("optimizer") is None:
        return {}
    names = {f"--{group.replace('_', '-')}": plain(root[group].get("_name")) for group in ("optimizer", "criterion")}
    names["--lr-scheduler"] = plain(root.lr_scheduler.get("_name")) if root.get("lr_scheduler") is not None else None
    common = root.get("common") or {}
    names["precision"] = next((flag(p) for p in PRECISIONS if common.get(p)), "float32")
    return names


class TrainingState:
    """The resumable state of a training run besides weights, optimizer and data position.

    Args:
        decoder: the model's decoder (its carried-state interface).
        stream: the name of the training stream (``--train-subset``).
        dni: the run's ``BackwardInterface``, or None.
        experiment: ``experiment_flags`` of this run.
        rows: ``DataParallelRows`` of this run's workers.
        curve: the run's ``LearningCurve`` (curves.csv), kept apart when a
            resumed run changes flags; None: no curve.
    """

    def __init__(
        self,
        decoder,
        stream: str,
        dni: Optional[BackwardInterface],
        experiment: dict,
        rows: DataParallelRows,
        curve=None,
    ):
        self.decoder, self.stream, self.dni, self.experiment, self.rows = decoder, stream, dni, experiment, rows
        self.curve = curve
        self._gathered = None
        self._resuming = False  # fairseq-train is loading a checkpoint to continue its run
        self._reset_optimizer = False  # ... with --reset-optimizer

    @contextmanager
    def resuming(self, reset_optimizer: bool = False):
        """The scope of fairseq-train's resume: a load inside it is a run continuing
        (its flags are compared with the checkpoint's); loads outside it (evaluation,
        generation, --finetune-from-model's weights) are not. ``reset_optimizer``:
        fairseq-train's --reset-optimizer (the checkpoint's optimizer state is not loaded)."""
        self._resuming, self._reset_optimizer = True, reset_optimizer
        try:
            yield
        finally:
            self._resuming, self._reset_optimizer = False, False

    def gather(self) -> None:
        """Gather every worker's carried rows (a collective: every worker calls it before a save)."""
        carried = self.decoder.carried_state_dict(self.stream)
        self._gathered = (
            None
            if carried is None
            else [[None if t is None else self.rows.gather(t) for t in layer] for layer in carried]
        )

    def state_dict(self) -> dict:
        if self._gathered is not None:
            carried, self._gathered = self._gathered, None
        elif self.rows.world == 1:
            carried = self.decoder.carried_state_dict(self.stream)
        else:  # not gathered: a save outside fairseq-train's path
            carried = None
            logger.warning("the carried state of the other workers' rows was not gathered: it is not saved")
        state = {"experiment": self.experiment}
        if carried:
            state["carried"] = carried
        if self.dni is not None:
            state.update(self.dni.state_dict())
        return state

    def load_state_dict(self, state: dict) -> List[str]:
        """Load what ``state_dict`` saved. In a resumed run, the experiment flags that
        changed since (as "--flag old -> new") are reported in one warning, the
        checkpoint run's curves.csv is kept apart, and they are returned; an optimizer,
        criterion or precision that changed without --reset-optimizer is refused first
        (fairseq would assert it after loading the weights)."""
        saved = state.get("experiment") if self._resuming else None
        # (a flag the checkpoint's run did not record, e.g. from an older version, is not compared)
        changed = {} if saved is None else {n: v for n, v in self.experiment.items() if n in saved and saved[n] != v}
        changes = [f"{name} {saved[name]} -> {value}" for name, value in changed.items()]
        refused = [c for name, c in zip(changed, changes) if name in OPTIMIZER_STATE]
        if refused and not self._reset_optimizer:
            raise UsageError(
                f"the checkpoint's optimizer state does not fit this run ({'; '.join(refused)}); pass "
                f"--reset-optimizer to continue with the new one's fresh state (weights, carried state and data "
                f"position kept; fairseq counts updates and the lr schedule from 0 again), or resume with the "
                f"checkpoint's flags"
            )
        self._load_carried(state)
        if self.dni is not None and BackwardInterface.found_in(state):
            self.load_dni(state)
        if changes:
            kept = self.curve.start_new_file() if self.curve is not None else None
            logger.warning(
                f"resuming with changed flags: {'; '.join(changes)}"
                + (
                    f" (curves.csv of the checkpoint's run goes to {kept} when this run writes its first row)"
                    if kept
                    else ""
                )
            )
        return changes

    def load_dni(self, state: dict, source: str = "the checkpoint") -> None:
        """The synthetic-gradient method's state (also from another run: ``--resume-sg``)."""
        if not BackwardInterface.found_in(state):
            raise UsageError(f"--resume-sg {source}: the checkpoint has no synthesizer (was it trained with --use-sg?)")
        try:
            self.dni.load_state_dict(state)
        except SynthesizerMismatch as e:
            raise UsageError(
                f"the synthesizer in {source} ({e.saved}) does not match this run's ({e.expected}); "
                f"use the same --sg-type/--sg-hidden/--sg-layers"
            ) from None

    def _load_carried(self, state: dict) -> None:
        """This worker's block of the saved global rows (the data iterator refuses a
        mid-epoch resume with another number of rows; at an epoch's start the state restarts)."""
        carried = state.get("carried")
        if not carried:
            return
        saved_rows = carried[0][0].size(0)
        if saved_rows % self.rows.world:
            return
        self.decoder.load_carried_state_dict(
            self.stream, [[None if t is None else self.rows.mine(t) for t in layer] for layer in carried]
        )
