"""``alternating_lm``: stateful truncated-BPTT language modelling, with synthetic gradients."""

import logging
import math
import os
from typing import Optional

import torch
from fairseq import metrics
from fairseq.data import Dictionary, data_utils
from fairseq.tasks import FairseqTask, register_task

from .. import distributed
from ..checkpoint_io import read_extra_state
from ..denormals import denormals_flushed
from ..dni import BackwardInterface, Synthesizer
from ..errors import UsageError
from ..flags import epochs_as_lists
from ..modules import CachePointer
from ..schedule import restart_points, synthetic_on
from .bptt_windows import BPTTWindowDataset, TokenStream, WindowIterator
from .config import LIST_FLAGS, AlternatingLMConfig, check_config
from .curves import FILENAME, LearningCurve
from .evaluation import CacheReport, describe_cache, evaluation_rows
from .generation import MIN_TEMPERATURE, ForcedStepSampling, prompt_dataset
from .training_state import TrainingState, experiment_flags

logger = logging.getLogger(__name__)


@register_task("alternating_lm", dataclass=AlternatingLMConfig)
class AlternatingLMTask(FairseqTask):
    """Language modelling over contiguous rows with carried recurrent state.

    Each split's token stream is cut into ``--batch-size`` rows
    (``--batch-size-valid`` for validation); every update takes the next
    window of every row, and the model carries its state from one window to
    the next. The state restarts at the beginning of every pass over a split.
    With ``--use-sg`` the task holds the synthetic-gradient method
    (``self.dni``, a ``BackwardInterface``), sets its phase every epoch and
    steps it after the model's optimizer.
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
        self.resuming = False  # set while fairseq-train loads a checkpoint to continue from
        self.epoch = 1
        self._lr_scales = []
        self._epoch_logged = False
        # the first worker writes curves.csv (fairseq has started the workers before it builds the task)
        writes = not cfg.no_save and distributed.is_first_worker()
        self.curve = LearningCurve(os.path.join(cfg.save_dir, FILENAME) if writes else None)

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

    # ---- data: contiguous rows, one window of each per batch ---------------------

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """Load ``split`` as one token stream (lines in order, eos after each)."""
        data = self.cfg.data.split(os.pathsep)[0]
        path = os.path.join(data, split)
        lines = data_utils.load_indexed_dataset(path, self.dictionary)
        if lines is None or len(lines) == 0:
            raise UsageError(
                f"split {split!r} is not in {data!r} (no {split}.bin/{split}.idx); "
                f"binarize it with fairseq-preprocess --only-source (--trainpref/--validpref/--testpref)"
            )
        stream = torch.cat([lines[i] for i in range(len(lines))]).long()
        if int(stream.max()) >= len(self.dictionary):
            raise UsageError(f"{path}.bin holds token ids beyond dict.txt ({len(self.dictionary)} types): the data was binarized with another dictionary")
        self.datasets[split] = TokenStream(split, stream)
        logger.info(f"{split}: {stream.numel():,} tokens")

    def dataset(self, split: str):
        if split not in self.datasets:
            raise KeyError(f"Dataset not loaded: {split}")
        return self.datasets[split]

    def _windows(self, stream: TokenStream, rows: Optional[int], training: bool, num_shards: int = 1,
                 shard_id: int = 0, epoch: int = 1, flag: str = "--batch-size"):
        """The rows of ``stream`` (``flag`` is the option that sets them), one window of each per batch."""
        if rows is None or rows < 1:
            raise UsageError(f"the number of rows must be given and at least 1: pass --batch-size (and --batch-size-valid) N, got {rows}")
        row_length = len(stream) // (rows * num_shards)
        if row_length < 2:
            raise UsageError(
                f"split {stream.name!r} has {len(stream):,} tokens, too few for {rows * num_shards} rows of at least 2 tokens; "
                f"lower {flag}"
            )
        if self.cfg.bptt >= row_length - 1 and stream.name not in self._warned_rows:
            self._warned_rows.add(stream.name)
            logger.warning(f"--bptt {self.cfg.bptt} is as long as the rows of {stream.name!r} ({row_length:,} tokens "
                           f"each in {rows * num_shards} rows): each pass over them is one window; lower --bptt or {flag}")
        dataset = BPTTWindowDataset(stream, rows, self.cfg.bptt, training=training, seed=self.cfg.seed,
                                    num_workers=num_shards, rank=shard_id)
        return WindowIterator(dataset, epoch)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, **kwargs):
        if not isinstance(dataset, TokenStream):  # e.g. prompts for generation
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch, **kwargs)
        training = dataset.name == self.cfg.train_subset
        flag = "--batch-size" if training else "--batch-size-valid"
        return self._windows(dataset, max_sentences, training, num_shards, shard_id, epoch, flag=flag)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        iterator = self._windows(dataset, evaluation_rows(batch_size, max_tokens), False, num_shards, shard_id)
        batches = iterator.next_epoch_itr(shuffle=False)
        cache = self.cache_pointer
        return batches if cache is None else CacheReport(batches, cache, iterator.dataset.row_length)

    # ---- generation (fairseq-interactive, the hub interface's sample()) -----------

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        return prompt_dataset(src_tokens, self.dictionary)

    def build_generator(self, models, args, **kwargs):
        generator = super().build_generator(models, args, **kwargs)
        if getattr(args, "sampling", False):  # every temperature > 0: see ForcedStepSampling
            generator.search = ForcedStepSampling(self.target_dictionary, getattr(args, "sampling_topk", -1),
                                                  getattr(args, "sampling_topp", -1.0))
        # fairseq divides the logits by the temperature; below MIN_TEMPERATURE they would overflow,
        # and every such temperature already samples the most likely word (its limit)
        generator.temperature = max(generator.temperature, MIN_TEMPERATURE)
        return generator

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Continue each prompt: the generator starts from </s> and is forced through the prompt."""
        with torch.no_grad():
            if prefix_tokens is None and sample["net_input"]["src_tokens"].size(1) > 1:
                prefix_tokens = sample["net_input"]["src_tokens"][:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens)

    # ---- model, criterion, and the state a checkpoint keeps -------------------------

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.use_sg and not hasattr(getattr(model, "decoder", None), "start_state"):
            raise UsageError("--use-sg needs a model with carried recurrent state: use --arch qrnn_lm (or qrnn_lm_ptb / qrnn_lm_wt2; any --rnn-type)")
        # fairseq saves task_state in checkpoints but never restores it, so
        # the state a resumed run needs rides in the model's extra state
        model.extra_state_hooks = (self.training_state, self.load_training_state)
        rows = distributed.DataParallelRows()
        if self.cfg.cache_window > 0:
            self.cache_pointer = model.cache_pointer = CachePointer(
                self.cfg.cache_window, self.cfg.cache_theta, self.cfg.cache_lambda, full_window_only=not self.cfg.cache_early)
            logger.info(describe_cache(self.cache_pointer))
        if self.cfg.use_sg:
            synthesizer = Synthesizer(str(self.cfg.sg_type), self.cfg.sg_hidden, self.cfg.sg_layers,
                                      self.cfg.sg_dropout, noise_std=self.cfg.sg_noise)
            self.dni = BackwardInterface(synthesizer, lr=self.cfg.sg_lr, scale=self.cfg.sg_scale,
                                         target=str(self.cfg.sg_target), frozen=self.cfg.fix_sg, rows=rows,
                                         layer_sizes=model.decoder.state_sizes)
            logger.info(f"synthesizer: {synthesizer} ({sum(p.numel() for p in synthesizer.parameters()):,} parameters)")
        experiment = experiment_flags(self.cfg, cfg, (self.cfg.batch_size or 0) * rows.world)
        self.run_state = TrainingState(model.decoder, self.cfg.train_subset, self.dni, experiment, rows)
        if self.cfg.resume_sg:
            self.run_state.load_dni(read_extra_state(self.cfg.resume_sg, "--resume-sg"), source=self.cfg.resume_sg)
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        if self.cfg.use_sg and cfg._name != "synthetic_gradient_lm":
            raise UsageError(f"--use-sg needs --criterion synthetic_gradient_lm (it trains the synthesizer), not {cfg._name}")
        return super().build_criterion(cfg, from_checkpoint)

    def gather_training_state(self) -> None:
        """Called on every worker before a save (the plugin's checkpoint_io)."""
        self.run_state.gather()

    def training_state(self) -> dict:
        return self.run_state.state_dict()

    def load_training_state(self, state: dict) -> None:
        changes = self.run_state.load_state_dict(state, compare=self.resuming)
        if changes:
            kept = self.curve.start_new_file()
            logger.warning(f"resuming with changed flags: {'; '.join(changes)}"
                           + (f" (curves.csv of the checkpoint's run is kept as {kept})" if kept else ""))

    # ---- the epoch calendar, curves.csv --------------------------------------------

    def begin_epoch(self, epoch, model):
        if epoch == 1 and self.cfg.max_epoch == 0 and self.cfg.max_update == 0:
            logger.warning("no --max-epoch or --max-update: fairseq reads 0 as no limit and trains until stopped")
        self.epoch = epoch
        synthetic = self.cfg.use_sg and synthetic_on(epoch, self.cfg.whenswitch, self.cfg.mixture, self.cfg.restart_base)
        if self.dni is not None:
            self.dni.synthetic = synthetic
        self._epoch_logged = False
        restart = epoch > 1 and (epoch - 1) in restart_points(self.cfg.restart_base, epoch)
        self.curve.begin_epoch(epoch, synthetic, restart)

    def begin_valid_epoch(self, epoch, model):
        self.curve.begin_validation()

    def post_validate(self, model, stats, agg):
        """One row of ``curves.csv`` per epoch (first validation subset, first worker)."""
        if "nll_loss" not in agg:
            return
        train = metrics.get_meter("train", "nll_loss")
        train_bits = train.avg if train is not None and train.count else float("nan")
        self.curve.end_validation(train_bits, agg["nll_loss"].avg, metrics.get_smoothed_values("train"))

    # ---- one update -------------------------------------------------------------------

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._lr_scales.append(sample.get("lr_scale", 1.0))
        with denormals_flushed(enabled=self.dni is not None):
            loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if self.dni is not None:
            logging_output.update(self.dni.pop_stats())  # known once the backward pass has run
        if not ignore_grad:
            self._watch_divergence(logging_output, update_num + 1)
        return loss, sample_size, logging_output

    def _watch_divergence(self, logging_output: dict, update: int) -> None:
        """Stop, before anything more is saved, at a loss that is not finite or is more than twice a
        uniform model's (perplexity above the vocabulary size squared: no run that learns gets there)."""
        summed = logging_output.get("nll_loss", logging_output.get("loss", 0.0))  # other criterions: the loss
        nats = float(summed) / max(float(logging_output.get("ntokens", 1)), 1.0)
        uniform = math.log(len(self.dictionary))
        if math.isfinite(nats) and math.isfinite(float(logging_output["loss"])) and nats <= 2 * uniform:
            return
        bits = nats / math.log(2)  # fairseq logs base 2: say it in bits
        what = f"{bits:,.1f} bits per token, over twice a uniform model's {uniform / math.log(2):.1f}" \
            if math.isfinite(bits) else f"{bits}"
        raise UsageError(f"training diverged at update {update}: the loss is {what}; the run stops here "
                         f"(checkpoints saved before stay as they were): lower --lr or set --clip-norm")

    def optimizer_step(self, optimizer, model, update_num):
        """Step with the lr scaled by this update's window length / bptt; then
        step the synthesizer (after the model, as the seed does)."""
        with denormals_flushed(enabled=self.dni is not None):  # as train_step: Adam's moments of the injected gradient
            self._step(optimizer, model)

    def _step(self, optimizer, model):
        scale = sum(self._lr_scales) / len(self._lr_scales) if self._lr_scales else 1.0
        windows, self._lr_scales = max(len(self._lr_scales), 1), []
        lr = optimizer.get_lr()
        if not self._epoch_logged:
            self._epoch_logged = True
            self.curve.set_lr(lr)
            sg = f", synthetic gradients {'on' if self.dni.synthetic else 'off'}" if self.dni is not None else ""
            cpu = next(model.parameters()).device.type == "cpu"
            threads = f"; {torch.get_num_threads()} CPU thread{'s' if torch.get_num_threads() > 1 else ''}" if cpu else ""
            logger.info(f"epoch {self.epoch:03d}: lr {lr:g}{sg}{threads}")
        optimizer.set_lr(lr * scale)
        optimizer.step()
        optimizer.set_lr(lr)
        if self.dni is not None:
            # the synthesizer cannot join fairseq's one optimizer: its Adam has
            # a constant lr and is not clipped with the model (the seed's)
            weight_decay = optimizer.param_groups[0].get("weight_decay", 0.0)
            self.dni.step(weight_decay, windows, all_reduce=distributed.all_reduce_sum)

    def max_positions(self):
        return None

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary
