"""A fairseq-train run's life: stopping on a scheduler's signal without losing work, and stopping together.

Slurm sends SIGTERM some time before it kills a job (and, with ``sbatch
--signal``, a signal of the job's choice earlier still). For a fairseq-train
run of the ``alternating_lm`` task, from its start to its end, ``Preemption``
notes the signals ``--stop-signals`` names (SIGTERM and SIGUSR1 by default; the
handlers found before the run are put back at its end). After every update
every worker learns whether any worker got one (an all-reduce of one number:
the workers may get the signal at different updates), and if one did, all write
a resumable checkpoint (``checkpoint_last.pt``: the carried rows, the token
position, the synthesizer, the optimizer and the random states, as every
resume has them) at that same update and stop with exit status
``EXIT_STATUS`` (75, EX_TEMPFAIL: "try again"). The same command then
continues exactly where the run stopped. With ``--requeue`` the first worker
then asks Slurm to requeue the job (``scontrol requeue $SLURM_JOB_ID``).

A worker whose peer stopped (its own one-line error, a kill) meets a closed
connection in its next collective; it stops with one line too, not gloo's
traceback.
"""

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import List, Optional

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils

from . import distributed
from .errors import AgreedStop, UsageError
from .patching import Patch, in_place
from .tasks import evaluation

logger = logging.getLogger(__name__)

EXIT_STATUS = 75  # os.EX_TEMPFAIL: stopped early, can continue; Slurm and shells read it as a failure
UNCATCHABLE = (signal.SIGKILL, signal.SIGSTOP)
# what gloo says in the collective of a worker whose peer has gone (the rendezvous store's
# DistNetworkError when the peer that hosted it has gone)
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection was likely closed")


def parse_signals(names: str) -> List[signal.Signals]:
    """``--stop-signals``: comma-separated names (SIGTERM, TERM) or numbers; "none" for none.

    Raises UsageError for a name that is no signal, or one no process can catch."""
    if names.strip().lower() in ("", "none"):
        return []
    found = []
    for name in names.split(","):
        name = name.strip().upper()
        try:
            sig = (
                signal.Signals(int(name))
                if name.isdigit()
                else signal.Signals[name if name.startswith("SIG") else "SIG" + name]
            )
        except (KeyError, ValueError):
            raise UsageError(f"--stop-signals {names}: {name} is not a signal name (e.g. SIGTERM,SIGUSR1)") from None
        if sig in UNCATCHABLE:
            raise UsageError(f"--stop-signals {names}: {sig.name} cannot be caught; name another signal")
        found.append(sig)
    return found


class Preemption:
    """The stop signals of one run: noted by a handler, agreed on by every worker.

    A context manager: entering installs a handler for each of ``signals``
    (only in the main thread, where Python runs handlers), leaving puts the
    previous handlers back. ``received`` is the first signal noted (None before).
    The same signal a second time puts the previous handler back and sends it
    again: a run that cannot reach its next update can still be stopped.
    """

    def __init__(self, signals: List[signal.Signals]):
        self.signals = signals
        self.received: Optional[signal.Signals] = None
        self._previous = {}

    def __enter__(self) -> "Preemption":
        if self.signals and threading.current_thread() is not threading.main_thread():
            logger.warning("fairseq-train runs outside the main thread: --stop-signals has no effect")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig in list(self._previous):
            self._put_back(sig)

    def _put_back(self, sig) -> None:
        handler = self._previous.pop(sig)
        # None: a handler set outside Python, which Python cannot set again; the default is the nearest
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _note(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        elif signum == self.received and signum in self._previous:
            self._put_back(signum)
            signal.raise_signal(signum)

    def agreed(self) -> Optional[signal.Signals]:
        """The signal any worker has noted (the highest number if several), the same on every
        worker; None when none has. A collective with several workers: all must call it (with
        --stop-signals none, the same on every worker, there is nothing to agree on: no collective)."""
        if not self.signals:
            return None
        noted = self.received.value if self.received is not None else 0
        agreed = distributed.all_reduce_max(noted)
        return signal.Signals(agreed) if agreed else None


class TrainingRun:
    """One fairseq-train run of the plugin's task, for as long as it runs (``current()``)."""

    _current: Optional["TrainingRun"] = None

    def __init__(self, cfg):
        self.cfg = cfg
        self.preemption = Preemption(parse_signals(cfg.task.stop_signals))

    @classmethod
    def current(cls) -> Optional["TrainingRun"]:
        return cls._current

    def __enter__(self) -> "TrainingRun":
        self._patches = in_place(RUN_PATCHES)
        self._patches.__enter__()
        self.preemption.__enter__()
        TrainingRun._current = self
        return self

    def __exit__(self, *exc) -> None:
        TrainingRun._current = None
        self.preemption.__exit__(*exc)
        self._patches.__exit__(*exc)

    def after_update(self, cfg, trainer, epoch_itr, should_stop: bool, end_of_epoch: bool) -> None:
        """At every update boundary, on every worker: stop together if any worker got a stop signal.

        Not at an epoch's end: fairseq steps the lr scheduler with the epoch's validation loss after
        it, which a resume cannot repeat; the run stops at the next update (and a run whose last epoch
        this was ends as usual)."""
        received = self.preemption.agreed()
        if received is None or should_stop or end_of_epoch:  # a run that ends here saves and ends as usual
            return
        updates = trainer.get_num_updates()
        if cfg.checkpoint.no_save or cfg.checkpoint.no_last_checkpoints:
            flag = "--no-save" if cfg.checkpoint.no_save else "--no-last-checkpoints"
            where = f"nothing saved ({flag}): the next run starts from the last checkpoint written before, if any"
        else:
            checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
            where = (
                f"{os.path.join(cfg.checkpoint.save_dir, 'checkpoint_last.pt')} saved: "
                f"the same command continues from there"
            )
        distributed.barrier()  # no worker exits (and has a launcher stop the others) before the file is written
        logger.warning(f"stopped on {received.name} after update {updates}; {where} (exit status {EXIT_STATUS})")
        if self.cfg.task.requeue and distributed.is_first_worker():
            requeue()
        raise SystemExit(EXIT_STATUS)


def requeue() -> None:
    """Ask Slurm to put this job back in its queue (``scontrol requeue $SLURM_JOB_ID``); one warning when it cannot."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        logger.warning("--requeue: SLURM_JOB_ID is not set (not a Slurm job): nothing requeued")
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning(f"--requeue: scontrol requeue {job} failed ({e}): requeue the job by hand")
        return
    if done.returncode != 0:
        logger.warning(f"--requeue: scontrol requeue {job} failed ({done.stderr.strip()[:200]}): requeue by hand")
    else:
        logger.info(f"--requeue: job {job} requeued")


def validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
    """fairseq-train's end of an update (validate and save when due), then the run's agreed stop."""
    valid_losses, should_stop = RUN_PATCHES[0].original(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)
    run = TrainingRun.current()
    if run is not None:
        run.after_update(cfg, trainer, epoch_itr, should_stop, end_of_epoch)
    return valid_losses, should_stop


def train_main(main, cfg, **kwargs):
    """fairseq-train's ``main`` on one worker, inside a ``TrainingRun``; a peer that stopped is one line."""
    with TrainingRun(cfg):
        try:
            result = main(cfg, **kwargs)
        except SystemExit as stop:
            # a stop every worker agreed on: complete, a stop signal, or an error all of them found
            if stop.code in (0, EXIT_STATUS) or isinstance(stop, AgreedStop):
                distributed.close_together()
            raise
        except RuntimeError as e:
            if not peer_gone(e):
                raise
            raise UsageError(
                f"worker {cfg.distributed_training.distributed_rank} stops: another worker of the run stopped first (its own line says why)"
            ) from None
    distributed.close_together()
    return result


def peer_gone(error: RuntimeError) -> bool:
    """Whether ``error`` is what torch.distributed raises in a worker whose peer has stopped."""
    import torch.distributed

    return isinstance(error, torch.distributed.DistNetworkError) or any(words in str(error) for words in PEER_GONE)


def call_main(cfg, main, **kwargs):
    """fairseq's start of a CLI's work on each worker: with the plugin's task, fairseq-train's runs as a
    TrainingRun and fairseq-eval-lm's sums its figures over the processes."""
    program = getattr(main, "__module__", None)
    if program == "__main__":  # python -m fairseq_cli.train: its functions are not the module the patches reach
        program = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", program)
        if (
            program in ("fairseq_cli.train", "fairseq_cli.eval_lm")
            and getattr(cfg.task, "_name", None) == "alternating_lm"
        ):
            tool = "fairseq-train" if program.endswith("train") else "fairseq-eval-lm"
            raise UsageError(f"python -m {program} with alternating_lm: run {tool} instead (the same flags)")
    distributed.check_spawn(cfg.distributed_training)
    if getattr(cfg.task, "_name", None) == "alternating_lm":
        if program == "fairseq_cli.train":
            main = functools.partial(train_main, main)
        elif program == "fairseq_cli.eval_lm":
            main = functools.partial(evaluation.eval_main, main)
    return _fairseq_call_main(cfg, main, **kwargs)


_fairseq_call_main = distributed_utils.call_main  # (fairseq_patches replaces it with call_main above)

# fairseq-train's own functions replaced while a run runs (fairseq_patches names them with the others)
RUN_PATCHES = (
    Patch(
        "fairseq_cli.train",
        "validate_and_save",
        validate_and_save,
        ("cfg", "trainer", "task", "epoch_itr", "valid_subsets", "end_of_epoch"),
        "the one place every worker passes after every update: there they agree on a stop signal, save and stop",
    ),
)
