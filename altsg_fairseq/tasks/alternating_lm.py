"""``alternating_lm``: stateful truncated-BPTT language modelling."""

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq import distributed_utils, metrics
from fairseq.data import (
    AppendTokenDataset,
    Dictionary,
    IdDataset,
    ListDataset,
    NestedDictionaryDataset,
    NumelDataset,
    PadDataset,
    PrependTokenDataset,
    data_utils,
    iterators,
)
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..errors import UsageError
from ..modules import CachePointer
from ..modules.schedule import check_epochs, restart_points, synthetic_on
from . import curves
from ..modules.synthesizer import CORES, Synthesizer
from .bptt_windows import BPTTWindowDataset, TokenStream

logger = logging.getLogger(__name__)


@dataclass
class AlternatingLMConfig(FairseqDataclass):
    data: Optional[str] = field(default=None, metadata={"help": "directory of fairseq-preprocess --only-source output (dict.txt, train.bin/.idx, ...)"})
    bptt: int = field(default=70, metadata={"help": "base window length of truncated BPTT; training windows vary around it (the seed's runs use 200)"})
    use_sg: bool = field(default=False, metadata={"help": "train a synthesizer of the gradient at the carried state (DNI); it injects synthetic gradients in synthetic phases"})
    sg_type: ChoiceEnum(CORES) = field(default="qrnn", metadata={"help": "recurrent core of the synthesizer"})
    sg_hidden: int = field(default=50, metadata={"help": "hidden size of the synthesizer's core"})
    sg_layers: int = field(default=1, metadata={"help": "layers of the synthesizer's core"})
    sg_dropout: float = field(default=0.1, metadata={"help": "dropout between the synthesizer core's layers"})
    sg_noise: float = field(default=0.5, metadata={"help": "standard deviation of the multiplicative Normal(1, std) noise on the synthesizer's inputs in training"})
    sg_scale: float = field(default=0.1, metadata={"help": "factor of the synthetic gradient injected at the end state"})
    sg_target: ChoiceEnum(["paper", "dni"]) = field(default="paper", metadata={"help": "synthesizer update: 'paper' reproduces the seed (its output gradient is 2*(2*g_hat - g_true) in synthetic phases, 2*(g_hat - g_true) in real ones); 'dni' always 2*(g_hat - g_true)"})
    sg_lr: float = field(default=1e-3, metadata={"help": "constant learning rate of the synthesizer's own Adam (its weight decay is the model optimizer's)"})
    fix_sg: bool = field(default=False, metadata={"help": "freeze the synthesizer (no updates)"})
    resume_sg: Optional[str] = field(default=None, metadata={"help": "checkpoint of an earlier --use-sg run to take the synthesizer and its optimizer state from"})
    whenswitch: List[int] = field(default_factory=list, metadata={"help": "epochs at whose start synthetic gradients are toggled on/off (off at first)"})
    mixture: bool = field(default=False, metadata={"help": "alternate: toggle synthetic gradients at every warm restart (--restart-base)"})
    restart_base: List[int] = field(default_factory=list, metadata={"help": "warm restarts: one value B restarts after epochs B, 2B, 4B, ...; several values are the restart epochs. Used by --mixture and by --lr-scheduler warm_restarts --restart-lr"})
    cache_window: int = field(default=0, metadata={"help": "evaluation (fairseq-eval-lm): mix the model's softmax with a neural cache over the last N (hidden state, next word) pairs of each row; 0: off (the seed's pointer.py: 3785)"})
    cache_theta: float = field(default=0.6625, metadata={"help": "inverse temperature of the cache's attention over past hidden states (pointer.py --theta)"})
    cache_lambda: float = field(default=0.1279, metadata={"help": "weight of the cache distribution in the mixture (pointer.py --lambdasm)"})
    cache_early: bool = field(default=False, metadata={"help": "mix the cache in as soon as it holds one word; the seed's pointer.py waits until it holds --cache-window words"})
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    save_dir: str = II("checkpoint.save_dir")
    no_save: bool = II("checkpoint.no_save")


@register_task("alternating_lm", dataclass=AlternatingLMConfig)
class AlternatingLMTask(FairseqTask):
    """Language modelling over contiguous rows with carried recurrent state.

    Each split's token stream is cut into ``--batch-size`` rows (``
    --batch-size-valid`` for validation); every update takes the next window
    of every row, and the model carries its state from one window to the
    next. The state restarts at the beginning of every pass over a split.
    """

    LIST_FLAGS = ("whenswitch", "restart_base")

    def __init__(self, cfg: AlternatingLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._lr_scales = []
        self.model = None
        self.synthesizer: Optional[Synthesizer] = None
        self.sg_optimizer: Optional[torch.optim.Optimizer] = None
        self.epoch = 1
        self.synthetic = False
        self._epoch_logged = False
        self._epoch_start = time.time()
        self._epoch_lr = float("nan")
        self._curve_written = False

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        epochs_as_lists(parser, cls.LIST_FLAGS)

    @classmethod
    def setup_task(cls, cfg: AlternatingLMConfig, **kwargs):
        if cfg.bptt < 1:
            raise UsageError(f"--bptt must be at least 1, got {cfg.bptt}")
        try:
            check_epochs("--whenswitch", cfg.whenswitch)
            check_epochs("--restart-base", cfg.restart_base, increasing=True)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if cfg.mixture and not cfg.restart_base:
            raise UsageError("--mixture toggles synthetic gradients at warm restarts: add --restart-base B [B ...]")
        sg_only = [flag for flag, on in [("--whenswitch", cfg.whenswitch), ("--mixture", cfg.mixture),
                                         ("--fix-sg", cfg.fix_sg), ("--resume-sg", cfg.resume_sg)] if on]
        if sg_only and not cfg.use_sg:
            raise UsageError(f"{', '.join(sg_only)}: synthesizer options, they need --use-sg")
        if cfg.cache_window < 0 or cfg.cache_theta < 0 or not 0 <= cfg.cache_lambda <= 1:
            raise UsageError(f"--cache-window and --cache-theta must be >= 0 and --cache-lambda in [0, 1], "
                             f"got {cfg.cache_window}, {cfg.cache_theta}, {cfg.cache_lambda}")
        if cfg.use_sg and min(cfg.sg_hidden, cfg.sg_layers) < 1:
            raise UsageError(f"--sg-hidden and --sg-layers must be at least 1, got {cfg.sg_hidden} and {cfg.sg_layers}")
        check_forget_mult_backend()
        if not cfg.data:
            raise UsageError("no data directory given; pass the fairseq-preprocess --destdir as the first argument")
        data = cfg.data.split(os.pathsep)[0]
        if not os.path.isdir(data):
            raise UsageError(f"data directory {data!r} does not exist; run fairseq-preprocess --only-source --destdir {data} first")
        dict_path = os.path.join(data, "dict.txt")
        if not os.path.isfile(dict_path):
            raise UsageError(f"no dict.txt in {data!r}; it must be the --destdir of fairseq-preprocess --only-source")
        dictionary = Dictionary.load(dict_path)
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

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

    def _windows(self, stream: TokenStream, rows: Optional[int], training: bool, num_shards: int = 1, shard_id: int = 0, epoch: int = 1):
        if rows is None or rows < 1:
            raise UsageError(f"the number of rows must be given and at least 1: pass --batch-size (and --batch-size-valid) N, got {rows}")
        row_length = len(stream) // (rows * num_shards)
        if row_length < 2:
            raise UsageError(
                f"split {stream.name!r} has {len(stream):,} tokens, too few for {rows * num_shards} rows of at least 2 tokens; "
                f"lower --batch-size"
            )
        dataset = BPTTWindowDataset(
            stream, rows, self.cfg.bptt, training=training, seed=self.cfg.seed,
            num_workers=num_shards, rank=shard_id,
        )
        return iterators.EpochBatchIterator(
            dataset=dataset,
            collate_fn=dataset.collater,
            batch_sampler=dataset.batches_for_epoch,
            epoch=epoch,
            disable_shuffling=True,
        )

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, **kwargs):
        if not isinstance(dataset, TokenStream):  # e.g. prompts for generation
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch, **kwargs)
        training = dataset.name == self.cfg.train_subset
        return self._windows(dataset, max_sentences, training, num_shards, shard_id, epoch)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        if context_window > 0:
            raise UsageError("--context-window is not supported: alternating_lm carries the recurrent state across windows instead")
        return self._windows(dataset, batch_size or 1, False, num_shards, shard_id).next_epoch_itr(shuffle=False)

    # ---- generation (fairseq-interactive, the hub interface's sample()) -------

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Prompts (each ending with </s>, as encode_line gives them) as
        sentences that start after an end of sentence, like the training text."""
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        prompts = [t[:-1] if len(t) and t[-1] == eos else t for t in src_tokens]
        sizes = torch.tensor([len(p) for p in prompts]).numpy()
        prompts = ListDataset(prompts, sizes)
        source = PrependTokenDataset(prompts, eos)
        return NestedDictionaryDataset(
            {
                "id": IdDataset(),
                "net_input": {
                    "src_tokens": PadDataset(source, pad, left_pad=False),
                    "src_lengths": NumelDataset(source, reduce=False),
                },
                "target": PadDataset(AppendTokenDataset(prompts, pad), pad, left_pad=False),
            },
            sizes=[sizes + 1],
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Continue each prompt: the generator starts from </s> and is forced through the prompt."""
        with torch.no_grad():
            if prefix_tokens is None and sample["net_input"]["src_tokens"].size(1) > 1:
                prefix_tokens = sample["net_input"]["src_tokens"][:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens)

    # ---- the synthesizer ------------------------------------------------------

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.use_sg and not hasattr(getattr(model, "decoder", None), "state_sizes"):
            raise UsageError("--use-sg needs a model with carried recurrent state: use --arch qrnn_lm (or qrnn_lm_ptb / qrnn_lm_wt2; any --rnn-type)")
        self.model = model
        model.extra_state_hooks = (self.training_state, self.load_training_state)
        if self.cfg.cache_window > 0:
            model.cache_pointer = CachePointer(self.cfg.cache_window, self.cfg.cache_theta, self.cfg.cache_lambda,
                                               full_window_only=not self.cfg.cache_early)
        if self.cfg.use_sg:
            # A synthetic gradient injected at the end state decays through
            # (1 - f) products into denormal floats, which slow CPU matrix
            # products about 3x (measured: scripts/bench_step.py); flush them.
            torch.set_flush_denormal(True)
            self.synthesizer = Synthesizer(str(self.cfg.sg_type), self.cfg.sg_hidden, self.cfg.sg_layers,
                                           self.cfg.sg_dropout, noise_std=self.cfg.sg_noise)
            self.sg_optimizer = torch.optim.Adam(self.synthesizer.parameters(), lr=self.cfg.sg_lr)
            if self.cfg.resume_sg:
                self.load_synthesizer_state(read_synthesizer_state(self.cfg.resume_sg), source=self.cfg.resume_sg)
            logger.info(f"synthesizer: {self.synthesizer} ({sum(p.numel() for p in self.synthesizer.parameters()):,} parameters)")
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        if self.cfg.use_sg and cfg._name != "synthetic_gradient_lm":
            raise UsageError(f"--use-sg needs --criterion synthetic_gradient_lm (it trains the synthesizer), not {cfg._name}")
        return super().build_criterion(cfg, from_checkpoint)

    def training_state(self) -> dict:
        """What a checkpoint keeps besides the weights (in the model's extra
        state): the training stream's carried state, so that a run resumed
        mid-epoch continues exactly, and the synthesizer with its optimizer."""
        state = {}
        carried = self.model.decoder.carried.get(self.cfg.train_subset)
        if carried:
            state["carried"] = [list(s) for s in carried]
        if self.synthesizer is not None:
            state.update(self.synthesizer_state())
        return state

    def load_training_state(self, state: dict) -> None:
        if "carried" in state:
            param = next(self.model.parameters())
            layers = self.model.decoder.rnn.layers
            self.model.decoder.carried[self.cfg.train_subset] = [
                layer.State(*(None if t is None else t.to(param) for t in tensors))
                for layer, tensors in zip(layers, state["carried"])
            ]
        if self.synthesizer is not None:
            self.load_synthesizer_state(state)

    @property
    def synthesizer_config(self) -> dict:
        """What a synthesizer checkpoint must match to be loaded here."""
        return {"core": str(self.cfg.sg_type), "hidden": self.cfg.sg_hidden, "layers": self.cfg.sg_layers}

    def synthesizer_state(self) -> dict:
        return {
            "synthesizer_config": self.synthesizer_config,
            "synthesizer": self.synthesizer.state_dict(),
            "synthesizer_optimizer": self.sg_optimizer.state_dict(),
            "synthesizer_recurrent_state": self.synthesizer.recurrent_state(),
        }

    def load_synthesizer_state(self, state: dict, source: str = "the checkpoint") -> None:
        if "synthesizer" not in state:
            if source != "the checkpoint":
                raise UsageError(f"--resume-sg {source}: the checkpoint has no synthesizer (was it trained with --use-sg?)")
            return
        mine = self.synthesizer_config
        theirs = state.get("synthesizer_config")
        if theirs != mine:
            raise UsageError(
                f"the synthesizer in {source} ({theirs}) does not match this run's ({mine}); "
                f"use the same --sg-type/--sg-hidden/--sg-layers"
            )
        self.synthesizer.load_state_dict(state["synthesizer"])
        self.sg_optimizer.load_state_dict(state["synthesizer_optimizer"])
        self.synthesizer.load_recurrent_state(state.get("synthesizer_recurrent_state", []))

    @property
    def data_parallel_world_size(self) -> int:
        if not torch.distributed.is_initialized():
            return 1
        return distributed_utils.get_data_parallel_world_size()

    def begin_epoch(self, epoch, model):
        self.epoch = epoch
        self.synthetic = self.cfg.use_sg and synthetic_on(epoch, self.cfg.whenswitch, self.cfg.mixture, self.cfg.restart_base)
        self._epoch_logged = False
        self._epoch_start = time.time()

    def begin_valid_epoch(self, epoch, model):
        self._curve_written = False

    def post_validate(self, model, stats, agg):
        """One row of ``curves.csv`` per epoch (first validation subset, rank 0)."""
        if self._curve_written or self.cfg.no_save or "nll_loss" not in agg:
            return
        self._curve_written = True
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        train = metrics.get_meter("train", "nll_loss")
        train_loss = train.avg * math.log(2) if train is not None and train.count else float("nan")
        valid_loss = agg["nll_loss"].avg * math.log(2)
        curves.write_row(os.path.join(self.cfg.save_dir, curves.FILENAME), {
            "epoch": self.epoch,
            "seconds": time.time() - self._epoch_start,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "train_ppl": math.exp(train_loss),
            "valid_ppl": math.exp(valid_loss),
            "lr": self._epoch_lr,
            "synthetic": bool(self.synthetic),
            "restart": self.epoch > 1 and (self.epoch - 1) in restart_points(self.cfg.restart_base, self.epoch),
        })

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._lr_scales.append(sample.get("lr_scale", 1.0))
        if self.synthesizer is not None:
            self.synthesizer.to(next(model.parameters()).device).train()
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        """Step with the lr scaled by this update's window length / bptt; then
        step the synthesizer's own optimizer (constant lr, not clipped)."""
        scale = sum(self._lr_scales) / len(self._lr_scales) if self._lr_scales else 1.0
        steps, self._lr_scales = max(len(self._lr_scales), 1), []
        lr = optimizer.get_lr()
        if not self._epoch_logged:
            self._epoch_logged = True
            self._epoch_lr = lr
            sg = f", synthetic gradients {'on' if self.synthetic else 'off'}" if self.cfg.use_sg else ""
            logger.info(f"epoch {self.epoch:03d}: lr {lr:g}{sg}")
        optimizer.set_lr(lr * scale)
        optimizer.step()
        optimizer.set_lr(lr)
        if self.synthesizer is not None:
            self._step_synthesizer(optimizer, steps)

    def _step_synthesizer(self, optimizer, steps: int) -> None:
        params = list(self.synthesizer.parameters())
        if not self.cfg.fix_sg:
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
            if self.data_parallel_world_size > 1:  # every worker takes part, so the all-reduce never waits
                torch.distributed.all_reduce(flat, group=distributed_utils.get_data_parallel_group())
            # the synthesizer's loss sums over state elements: workers' rows add
            # up as one worker holding all rows would; accumulated windows average
            flat /= steps
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p)
            weight_decay = optimizer.param_groups[0].get("weight_decay", 0.0)
            for group in self.sg_optimizer.param_groups:
                group["weight_decay"] = weight_decay
            self.sg_optimizer.step()
        self.sg_optimizer.zero_grad(set_to_none=True)

    def max_positions(self):
        return None


    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def epochs_as_lists(parser, names) -> None:
    """Let list-of-epochs flags take space-separated values (--restart-base 160 320)."""
    for action in parser._actions:
        if action.dest in names:
            action.nargs, action.type, action.default = "*", int, []


def read_synthesizer_state(path: str) -> dict:
    """The synthesizer part of a checkpoint's model state, with clear errors."""
    if not os.path.isfile(path):
        raise UsageError(f"--resume-sg {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:  # a truncated or foreign file
        raise UsageError(f"--resume-sg {path}: cannot read it as a checkpoint ({type(e).__name__}: {e})") from None
    return state.get("model", {}).get("_extra_state") or {}


def check_forget_mult_backend() -> None:
    """The ALTSG_FORGET_MULT switch, checked before any training."""
    from ..modules import forget_mult_cuda
    from ..modules.forget_mult import BACKENDS

    backend = os.environ.get("ALTSG_FORGET_MULT", "auto")
    if backend not in BACKENDS:
        raise UsageError(f"ALTSG_FORGET_MULT={backend} is not a forget-mult backend; choose one of {', '.join(BACKENDS)}")
    if backend == "cuda" and not forget_mult_cuda.available():
        missing = "a CUDA GPU" if not torch.cuda.is_available() else "CuPy"
        raise UsageError(f"ALTSG_FORGET_MULT=cuda needs {missing}: {forget_mult_cuda.INSTALL_HINT}; or unset it")
