"""``alternating_lm``: stateful truncated-BPTT language modelling, with synthetic gradients."""

import logging
import os
from typing import Optional

import torch
from fairseq import metrics
from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask, register_task

from .. import distributed
from ..checkpoint_io import copy_dictionary, read_extra_state
from ..modules.denormals import denormals_flushed
from ..dni import BackwardInterface, Synthesizer
from ..errors import UsageError
from ..flags import epochs_as_lists
from ..modules import CachePointer
from ..models.qrnn_decoder import NO_LENGTH_LIMIT
from ..optim import nt_asgd
from ..schedule import restart_points, synthetic_on
from .config import LIST_FLAGS, AlternatingLMConfig, autocast_dtype, check_config, describe_precision, on_cpu
from .curves import FILENAME, LearningCurve
from .divergence import loss_values, read_on_host, stop_if_diverged, summed_over_workers
from .evaluation import describe_cache
from .generation import PromptGeneration
from .row_data import ContiguousRowData
from .training_state import TrainingState, experiment_flags

logger = logging.getLogger(__name__)


@register_task("alternating_lm", dataclass=AlternatingLMConfig)
class AlternatingLMTask(ContiguousRowData, PromptGeneration, FairseqTask):
    """Language modelling over contiguous rows with carried recurrent state.

    Each split's token stream is cut into ``--batch-size`` rows
    (``--batch-size-valid`` for validation); every update takes the next
    window of every row, and the model carries its state from one window to
    the next. The state restarts at the beginning of every pass over a split.
    With ``--use-sg`` the task holds the synthetic-gradient method
    (``self.dni``, a ``BackwardInterface``), sets its phase every epoch and
    steps it after the model's optimizer. With ``--optimizer nt_asgd`` it
    hands that optimizer each end-of-epoch validation loss and swaps the
    averaged weights in for validation. Data: ``ContiguousRowData``; generation:
    ``PromptGeneration``.
    """

    # the capability qrnn_lm asks for: net_input names a stream and its resets
    contiguous_streams = True

    def __init__(self, cfg: AlternatingLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.dni: Optional[BackwardInterface] = None
        self.run_state: Optional[TrainingState] = None
        self.cache_pointer: Optional[CachePointer] = None
        self._warned_rows = set()
        self._averaging: Optional[nt_asgd.NTASGD] = None  # --optimizer nt_asgd, once the first update shows it
        self._validated = False
        self._said_mid_epoch = False
        self.epoch = 1
        self._lr_scales = []
        self._epoch_logged = False
        # the first worker writes curves.csv (fairseq has started the workers before it builds the task)
        writes = not cfg.no_save and distributed.is_first_worker()
        self.curve = LearningCurve(os.path.join(cfg.save_dir, FILENAME) if writes else None)
        if cfg.amp:
            no_batch_retries(cfg)

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        epochs_as_lists(parser, LIST_FLAGS)

    @classmethod
    def setup_task(cls, cfg: AlternatingLMConfig, **kwargs):
        data = check_config(cfg)
        dictionary = Dictionary.load(os.path.join(data, "dict.txt"))
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    # ---- model, criterion, and the state a checkpoint keeps -------------------------

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.use_sg and not hasattr(getattr(model, "decoder", None), "start_state"):
            raise UsageError(
                "--use-sg needs a model with carried recurrent state: use --arch qrnn_lm (or qrnn_lm_ptb / qrnn_lm_wt2; any --rnn-type)"
            )
        if hasattr(getattr(model, "decoder", None), "use_autocast"):
            model.decoder.use_autocast(autocast_dtype(self.cfg))
        logger.info(describe_precision(self.cfg))
        rows = distributed.DataParallelRows()
        if self.cfg.cache_window > 0:
            self.cache_pointer = model.cache_pointer = CachePointer(
                self.cfg.cache_window,
                self.cfg.cache_theta,
                self.cfg.cache_lambda,
                full_window_only=not self.cfg.cache_early,
            )
            logger.info(describe_cache(self.cache_pointer))
        if self.cfg.use_sg:
            synthesizer = Synthesizer(
                str(self.cfg.sg_type),
                self.cfg.sg_hidden,
                self.cfg.sg_layers,
                self.cfg.sg_dropout,
                noise_std=self.cfg.sg_noise,
            )
            self.dni = BackwardInterface(
                synthesizer,
                lr=self.cfg.sg_lr,
                scale=self.cfg.sg_scale,
                target=str(self.cfg.sg_target),
                frozen=self.cfg.fix_sg,
                rows=rows,
                layer_sizes=model.decoder.state_sizes,
            )
            logger.info(f"synthesizer: {synthesizer} ({sum(p.numel() for p in synthesizer.parameters()):,} parameters)")
        experiment = experiment_flags(self.cfg, cfg, (self.cfg.batch_size or 0) * rows.world)
        self.run_state = TrainingState(model.decoder, self.cfg.train_subset, self.dni, experiment, rows, self.curve)
        # fairseq saves task_state in checkpoints but never restores it, so
        # the state a resumed run needs rides in the model's extra state
        model.run_state = self.run_state
        if self.cfg.resume_sg:
            self.run_state.load_dni(read_extra_state(self.cfg.resume_sg, "--resume-sg"), source=self.cfg.resume_sg)
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        if self.cfg.use_sg and cfg._name != "synthetic_gradient_lm":
            raise UsageError(
                f"--use-sg needs --criterion synthetic_gradient_lm (it trains the synthesizer), not {cfg._name}"
            )
        return super().build_criterion(cfg, from_checkpoint)

    # ---- the epoch calendar, curves.csv --------------------------------------------

    def begin_epoch(self, epoch, model):
        if epoch == 1 and self.cfg.max_epoch == 0 and self.cfg.max_update == 0:
            logger.warning("no --max-epoch or --max-update: fairseq reads 0 as no limit and trains until stopped")
        if not self.cfg.no_save and distributed.is_first_worker():  # the save dir holds all its checkpoints need
            copy_dictionary(os.path.join(self.cfg.data.split(os.pathsep)[0], "dict.txt"), self.cfg.save_dir)
        self.epoch = epoch
        synthetic = self.cfg.use_sg and synthetic_on(
            epoch, self.cfg.whenswitch, self.cfg.mixture, self.cfg.restart_base
        )
        if self.dni is not None:
            self.dni.synthetic = synthetic
        self._epoch_logged = False
        restart = epoch > 1 and (epoch - 1) in restart_points(self.cfg.restart_base, epoch)
        self.curve.begin_epoch(epoch, synthetic, restart)

    def begin_valid_epoch(self, epoch, model):
        self.curve.begin_validation()
        self._validated = False
        if self._averaging is not None:  # NT-ASGD: validate (and save) the averaged weights
            self._averaging.use_averages()

    def post_validate(self, model, stats, agg):
        """One row of ``curves.csv`` per epoch (first validation subset, first worker);
        NT-ASGD's trigger sees the first subset's loss at the end of an epoch."""
        if "nll_loss" not in agg:
            return
        if self._averaging is not None and not self._validated:
            self._observe(agg["loss"].avg)
        self._validated = True
        train = metrics.get_meter("train", "nll_loss")
        train_bits = train.avg if train is not None and train.count else float("nan")
        self.curve.end_validation(train_bits, agg["nll_loss"].avg, metrics.get_smoothed_values("train"))

    def _observe(self, loss: float) -> None:
        """Hand NT-ASGD's trigger an end-of-epoch validation loss. awd-lstm-lm validates once an epoch and its
        rule counts epochs: a validation in the middle of one (--save-interval-updates,
        --validate-interval-updates, a --max-update mid-epoch) stays out of the history."""
        if self.end_of_epoch():
            self._averaging.observe(loss, epoch=self.epoch)
        elif not self._said_mid_epoch and not self._averaging.averaging:
            self._said_mid_epoch = True
            logger.info(
                "--optimizer nt_asgd: validations in the middle of an epoch are not counted by its switch to "
                "averaged SGD, which sees the end-of-epoch validations only (as awd-lstm-lm's)"
            )

    # ---- one update -------------------------------------------------------------------

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self._averaging is not None:  # train the iterates, not the averages validation saw
            self._averaging.use_iterates()
        self._lr_scales.append(sample.get("lr_scale", 1.0))
        with denormals_flushed(enabled=self.dni is not None):
            loss, sample_size, logging_output = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad
            )
        # one host read for the step: the losses the divergence check needs, with what the
        # synthesizer's backward pass left on the device (one transfer)
        losses = {} if ignore_grad else loss_values(logging_output)
        read = dict(
            zip(
                losses,
                self.dni.settle(list(losses.values())) if self.dni is not None else read_on_host(list(losses.values())),
            )
        )
        if self.dni is not None:
            logging_output.update(self.dni.pop_stats())  # known once the backward pass has run
        if distributed.world_size() > 1:  # one decision for all workers, taken on the sums of their losses
            summed = summed_over_workers(dict(logging_output, **read), counted=not ignore_grad)
            if summed["ntokens"] > 0:
                stop_if_diverged(summed, update_num + 1, len(self.dictionary))
        elif not ignore_grad:
            stop_if_diverged(dict(logging_output, **read), update_num + 1, len(self.dictionary))
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        """Step with the lr scaled by this update's window length / bptt; then
        step the synthesizer (after the model, as the original code does)."""
        with denormals_flushed(enabled=self.dni is not None):  # as train_step: Adam's moments of the injected gradient
            self._step(optimizer, model)

    def _step(self, optimizer, model):
        self._averaging = nt_asgd.find(optimizer)
        scale = sum(self._lr_scales) / len(self._lr_scales) if self._lr_scales else 1.0
        windows, self._lr_scales = max(len(self._lr_scales), 1), []
        lr = optimizer.get_lr()
        if not self._epoch_logged:
            self._epoch_logged = True
            self.curve.set_lr(lr)
            sg = f", synthetic gradients {'on' if self.dni.synthetic else 'off'}" if self.dni is not None else ""
            cpu = next(model.parameters()).device.type == "cpu"
            threads = (
                f"; {torch.get_num_threads()} CPU thread{'s' if torch.get_num_threads() > 1 else ''}" if cpu else ""
            )
            logger.info(f"epoch {self.epoch:03d}: lr {lr:g}{sg}{threads}")
        if (
            self.cfg.amp
            and on_cpu(self.cfg)
            and not torch.isfinite(getattr(optimizer, "fp32_optimizer", optimizer).clip_grad_norm(0))
        ):
            # fairseq's --amp on a CPU holds a disabled GradScaler, which would apply these gradients:
            # stop as fairseq does for them in float32
            raise FloatingPointError("gradients are Nan/Inf")
        optimizer.set_lr(lr * scale)
        optimizer.step()
        optimizer.set_lr(lr)
        if self.dni is not None:
            # the synthesizer cannot join fairseq's one optimizer: its Adam has
            # a constant lr and is not clipped with the model (as in the original code)
            weight_decay = optimizer.param_groups[0].get("weight_decay", 0.0)
            self.dni.step(weight_decay, windows, all_reduce=distributed.all_reduce_sum)

    def max_positions(self):
        return NO_LENGTH_LIMIT  # the model's: windows of --bptt tokens, rows of any length

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def no_batch_retries(cfg) -> None:
    """Make fairseq skip, not retry, a batch whose --amp gradients overflowed.

    fairseq's trainer runs such a batch again (--amp-batch-retries, 2 by
    default), but its windows' carried state, the synthesizer's state and
    the data position have moved on when it has run once: no window may run
    twice. The trainer reads the flag from the run's config (the task's
    config is a part of it) when a batch overflows."""
    root = cfg._get_root() if hasattr(cfg, "_get_root") else None
    common = getattr(root, "common", None) if root is not None else None
    if common is not None and common.get("amp_batch_retries", 0):
        logger.info(
            f"--amp: a batch whose gradients overflow is skipped, not retried (--amp-batch-retries "
            f"{common.amp_batch_retries} would run its windows twice, their carried state having moved on)"
        )
        common.amp_batch_retries = 0
