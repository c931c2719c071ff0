"""The synthetic-gradient (DNI) method as one object: ``BackwardInterface``.

As dni-pytorch's ``BackwardInterface`` is the whole DNI concept for one
activation, this object is the whole method for a recurrent model's carried
state (paper section 3; docs/method.md#the-synthesizer,
#the-single-backward-update and #schedules): it owns the synthesizer,
its Adam optimiser, the phase (synthetic or real gradients), the
synthesizer's recurrent state and the statistics of the current window.
One training window of B rows, whose flat carried state has S numbers a row:

    start, probe = interface.wrap_start(s_0, tokens, restart)  # s_0: (B, S)
    ... run the model from ``start``; end state s_T (B, S), summed loss ...
    (loss + probe + interface.inject(s_T, tokens)).backward()
    stats = interface.pop_stats()                  # for the logs
    interface.step(weight_decay, windows, all_reduce)

Host reads: the backward pass leaves its verdicts (was the gradient at the
start state finite; does the injection swamp it) on the device, and
``pop_stats`` reads them in one transfer; ``settle(values)`` does that read
for a caller that needs device values of its own on the host at the same
point (the task's divergence check), so that a training step waits for the
device once there (and once more in synthetic phases: ``inject`` decides on
the host whether a prediction is finite).

``tokens`` is the number of target tokens the loss sums over, on all
data-parallel workers together: it turns gradients of the summed loss into
those of the per-token mean loss, the units the synthesizer learns in (the
original code's loss is a mean).

With data-parallel workers, each holding a block of the rows, the
synthesizer runs over the states of ALL rows (``rows.gather``) and each
worker keeps the predictions for its own rows (``rows.mine``): the QRNN
synthesizer's recurrence runs across the elements of all rows, so this is
what one worker holding all rows computes, and the synthesizer's recurrent
state is the same on every worker. It costs an all-gather of the start (and
end) state per window, and every worker runs the whole synthesizer.
"""

import logging
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from .synthetic_gradient import TrainSynthesizer, inject
from .synthesizer import Synthesizer

logger = logging.getLogger(__name__)

TARGETS = ("paper", "dni")
# when the injected gradient stays more than SWAMP_RATIO times the true gradient it stands for
# for SWAMP_WINDOWS windows in a row, synthetic gradients swamp the real ones: one warning
SWAMP_RATIO, SWAMP_WINDOWS = 100.0, 50
_KEYS = ("synthesizer_config", "synthesizer", "synthesizer_optimizer", "synthesizer_recurrent_state")


def _own_precision(device: torch.device):
    """The synthesizer runs in its own dtype (float32), never under the caller's
    autocast: the per-token gradients it learns, ~1e-7 to 1e-5, are below
    float16's smallest normal number and keep only 3 significant digits in
    bfloat16."""
    return torch.autocast(device.type, enabled=False)


class Rows(Protocol):
    """Per-row tensors of data-parallel workers: ``gather`` concatenates every
    worker's rows (dim 0) in global order, on every worker; ``mine`` takes this
    worker's block of them back."""

    def gather(self, t: Tensor) -> Tensor: ...

    def mine(self, t: Tensor) -> Tensor: ...


class LocalRows:
    """One worker: it holds all rows."""

    def gather(self, t: Tensor) -> Tensor:
        return t

    def mine(self, t: Tensor) -> Tensor:
        return t


class SynthesizerMismatch(ValueError):
    """A saved synthesizer of another core or size than the one it is loaded into."""

    def __init__(self, saved: Optional[dict], expected: dict):
        self.saved, self.expected = saved, expected
        super().__init__(f"the saved synthesizer ({saved}) does not match this one ({expected})")


class BackwardInterface:
    """Synthetic gradients at a carried state: the synthesizer, its optimiser and its phase.

    Args:
        synthesizer: the ``Synthesizer`` (it is put in training mode).
        lr: the constant learning rate of the synthesizer's own Adam (the
            original code's 1e-3); its weight decay is given at every ``step``.
        scale: factor of the synthetic gradient injected at the end state (0.1).
        target: ``"paper"``: the original code's update, whose two backward passes
            give the synthesizer the output gradient 2 (2 g_hat - g_true) in
            synthetic phases and 2 (g_hat - g_true) in real ones;
            ``"dni"``: always 2 (g_hat - g_true).
        frozen: never update the synthesizer (alternate_sg's ``--fixsg``).
        rows: the data-parallel ``Rows`` (None: one worker).
        layer_sizes: how the S numbers of a flat state split into the
            model's layers (for per-layer statistics; None: one part).

    ``synthetic`` is the phase: True while synthetic gradients are injected.
    Raises ``ValueError`` for an unknown target or a negative lr.
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        lr: float = 1e-3,
        scale: float = 0.1,
        target: str = "paper",
        frozen: bool = False,
        rows: Optional[Rows] = None,
        layer_sizes: Optional[Sequence[int]] = None,
    ):
        if target not in TARGETS:
            raise ValueError(f"unknown synthesizer target {target!r}; choose one of {', '.join(TARGETS)}")
        if lr < 0:
            raise ValueError(f"the synthesizer's learning rate must be >= 0, got {lr}")
        self.synthesizer = synthesizer.train()
        self.optimizer = torch.optim.Adam(synthesizer.parameters(), lr=lr, fused=True)  # one pass per tensor
        self.scale, self.target, self.frozen = scale, target, frozen
        self.rows = rows or LocalRows()
        self.layer_sizes = list(layer_sizes) if layer_sizes else None
        self.synthetic = False
        self._window: dict = {}
        self._injected: Optional[Tensor] = None  # |injected|^2 of the last window, awaiting the true gradient
        self._window_injected: Optional[Tensor] = None
        self._swamped = 0
        # device values the host must read, each with what to do with them (``settle``)
        self._pending: List[Tuple[Tensor, Callable[[List[float]], None]]] = []

    # ---- one training window --------------------------------------------------

    def wrap_start(self, start: Tensor, tokens: float, restart: bool = False) -> Tuple[Tensor, Tensor]:
        """Route the start state through the synthesizer's training.

        start: (B, S) the window's flat start state (its gradient is the
        target). restart: a new pass over the data begins here, so the
        synthesizer's recurrent state restarts too.
        Returns (start', probe): start' (B, S) equals ``start`` and replaces
        it in the forward pass; probe is a zero scalar to add to the loss.
        """
        self._move_to(start.device)
        self.settle()  # a backward pass whose verdicts nobody read yet (no pop_stats since)
        if restart:
            self.synthesizer.reset_state()
            self._injected = None
        g_hat = self._predict(start)
        # every window carries the same keys in the same order on every worker, zeros
        # standing for what it did not measure: fairseq sums the logging outputs of all
        # workers as one concatenated buffer (before its overflow check), so a worker
        # whose backward overflowed must send as many numbers as one whose did not
        keys = self._sum_keys(start.size(1))
        zeros = torch.zeros(len(keys), dtype=torch.float64, device=start.device).unbind()  # one allocation
        self._window = {
            "sg_steps": 1,
            "sg_elements": start.numel(),
            "sg_skipped": 0,
            "sg_on": int(self.synthetic),
            **dict(zip(keys, zeros)),
        }
        self._window_injected, self._injected = self._injected, None  # paired in this window's backward
        prediction_counts_twice = self.target == "paper" and self.synthetic
        return TrainSynthesizer.apply(start, g_hat, tokens, prediction_counts_twice, self._record)

    def inject(self, end: Tensor, tokens: float) -> Tensor:
        """A zero scalar to add to the loss; in synthetic phases its gradient at
        ``end`` (B, S), the window's flat end state, is scale * S(end) in the
        units of the summed loss. A non-finite prediction is never injected:
        it is counted (``sg_skipped``) and the synthesizer's state restarts."""
        if not self.synthetic:
            return end.new_zeros(())
        with torch.no_grad(), _own_precision(end.device):
            g_hat = self.synthesizer(self.rows.gather(end.detach().to(self._dtype)))
        if not torch.isfinite(g_hat).all():  # all rows': every worker decides alike
            self._window.update(sg_skipped=1, sg_on=0)
            self.synthesizer.reset_state()
            return end.new_zeros(())
        g_hat = self.rows.mine(g_hat)
        self._injected = (self.scale * g_hat.double()).pow(2).sum()  # per-token units, as the true gradient
        return inject(end, g_hat, self.scale * tokens)

    def pop_stats(self) -> dict:
        """The statistics of the window since ``wrap_start`` (complete once its
        backward pass has run), then forgets them. All are sums, so that the
        windows of several workers and accumulated windows add up; with
        g_hat the prediction and g the true gradient at the start state (per-token
        units, this worker's rows):

        - ``sg_steps`` 1; ``sg_elements`` B * S; ``sg_on`` 1 when synthetic
          gradients were injected; ``sg_skipped`` 1 when a non-finite
          prediction or gradient was skipped;
        - ``sg_loss`` sum((g_hat - g)^2) (the synthesizer's regression loss);
        - ``sg_hat_sq`` |g_hat|^2, ``sg_true_sq`` |g|^2, ``sg_dot`` <g_hat, g>, and
          the same per layer of the flat state (``sg_hat_sq_l0``, ...): the
          cosine <g_hat, g> / (|g_hat| |g|), the norm ratio |g_hat| / |g| and the
          relative error |g_hat - g| / |g| follow from the sums;
        - after a synthetic window: ``sg_injected_sq`` |scale * S(s_T)|^2 of the
          previous window's injection and ``sg_future_sq`` |g|^2 of this window,
          the true gradient that injection stood in for (this window's start
          state is that window's end state).

        Every window has all of these keys, in this order, on every worker
        (the per-layer ones whenever ``layer_sizes`` splits the state): a sum
        not measured in this window (a skipped gradient, no injection before
        it, no backward pass) is 0. The sums are float64 tensors on the state's
        device, the counts Python ints. Empty when no window ran. Reads the
        backward pass's verdicts on the host unless ``settle`` has."""
        self.settle()
        stats, self._window = self._window, {}
        return stats

    def settle(self, values: Sequence[Tensor] = ()) -> List[float]:
        """Read on the host, in ONE transfer, what this window's backward pass left
        on the device (whether its gradient was finite, the injection against it)
        and ``values``, 0-dim tensors on the state's device that the caller needs
        read (e.g. the loss, for a divergence check); act on the former and
        return the latter as Python floats. Reads nothing when there is nothing
        to read."""
        pending, self._pending = self._pending, []
        parts = [t for t, _ in pending] + [v.detach().reshape(1) for v in values]
        if not parts:
            return []
        device = parts[0].device
        read = torch.cat([t.to(device=device, dtype=torch.float64) for t in parts]).tolist()  # the one read
        start = 0
        for t, act in pending:
            act(read[start : start + t.numel()])
            start += t.numel()
        return read[start:]

    def step(
        self, weight_decay: float = 0.0, windows: int = 1, all_reduce: Optional[Callable[[Tensor], None]] = None
    ) -> None:
        """Update the synthesizer from the gradients of ``windows`` accumulated windows.

        The synthesizer's loss sums over state elements, so the gradients of
        data-parallel workers (``all_reduce`` sums a tensor over them in
        place; every worker must call ``step``) add up as one worker holding
        all rows would; accumulated windows are averaged. Constant lr, no
        clipping, L2 ``weight_decay`` (the model optimizer's).
        """
        params = list(self.synthesizer.parameters())
        if not self.frozen:
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
            if all_reduce is not None:
                all_reduce(flat)
            flat /= max(windows, 1)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p)
            for group in self.optimizer.param_groups:
                group["weight_decay"] = weight_decay
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ---- checkpoints ------------------------------------------------------------

    @staticmethod
    def found_in(state: dict) -> bool:
        """Whether ``state`` (as ``state_dict`` returns it, possibly inside a larger dict) holds a synthesizer."""
        return "synthesizer" in state

    def state_dict(self) -> dict:
        """The synthesizer, its config, its optimizer and its recurrent state (tensors and plain containers)."""
        return dict(
            zip(
                _KEYS,
                (
                    self.synthesizer.config,
                    self.synthesizer.state_dict(),
                    self.optimizer.state_dict(),
                    self.synthesizer.recurrent_state(),
                ),
            )
        )

    def load_state_dict(self, state: dict) -> None:
        """Inverse of ``state_dict``; raises ``SynthesizerMismatch`` for another core or size."""
        if state.get("synthesizer_config") != self.synthesizer.config:
            raise SynthesizerMismatch(state.get("synthesizer_config"), self.synthesizer.config)
        self.synthesizer.load_state_dict(state["synthesizer"])
        self.optimizer.load_state_dict(state["synthesizer_optimizer"])
        self.synthesizer.load_recurrent_state(state.get("synthesizer_recurrent_state", []))

    # ---- internals --------------------------------------------------------------

    def _predict(self, start: Tensor) -> Tensor:
        """S(start) for this worker's rows, the synthesizer run over all rows."""
        with _own_precision(start.device):
            return self.rows.mine(self.synthesizer(self.rows.gather(start.detach().to(self._dtype))))

    def _per_layer(self, width: int) -> bool:
        """Whether a flat state of ``width`` numbers gets per-layer statistics."""
        return bool(self.layer_sizes) and len(self.layer_sizes) > 1 and sum(self.layer_sizes) == width

    def _sum_keys(self, width: int) -> list:
        """The summed statistics of every window whose flat state has ``width``
        numbers a row, in their fixed order (``pop_stats``)."""
        suffixes = [""] + ([f"_l{n}" for n in range(len(self.layer_sizes))] if self._per_layer(width) else [])
        return [
            "sg_loss",
            *(f"{name}{suffix}" for suffix in suffixes for name in ("sg_hat_sq", "sg_true_sq", "sg_dot")),
            "sg_injected_sq",
            "sg_future_sq",
        ]

    def _record(self, g_hat: Tensor, g_true: Tensor, flags: Tensor) -> None:
        """Where the window's backward pass reports the prediction and the true
        gradient at the start state (both (B, S)) and its verdicts, flags (2,)
        on the device: [a non-zero loss scale, a finite error]. The sums are
        formed on the device at once; ``settle`` reads the flags (and the two
        numbers the swamping watch compares) later and puts back the window's
        zeros where they do not both hold (no loss scale: a dummy batch, as if
        nothing was reported; a non-finite error: the window is counted as
        skipped). ``pop_stats`` hands the sums on. Only values change here: the
        keys were all set by ``wrap_start``."""
        g_hat, g_true = g_hat.double(), g_true.double()
        sums = {"sg_loss": (g_hat - g_true).pow(2).sum()}
        parts = [(g_hat, g_true, "")]
        if self._per_layer(g_hat.size(1)):
            parts += [
                (h, t, f"_l{n}")
                for n, (h, t) in enumerate(zip(g_hat.split(self.layer_sizes, 1), g_true.split(self.layer_sizes, 1)))
            ]
        for h, t, suffix in parts:
            sums.update(
                {
                    f"sg_hat_sq{suffix}": h.pow(2).sum(),
                    f"sg_true_sq{suffix}": t.pow(2).sum(),
                    f"sg_dot{suffix}": (h * t).sum(),
                }
            )
        injected = self._window_injected
        if injected is not None:
            sums.update(sg_injected_sq=injected.to(sums["sg_loss"]), sg_future_sq=sums["sg_true_sq"])
        window = self._window
        zeros = {k: window[k] for k in sums}  # wrap_start's zeros
        window.update(sums)
        check = [flags.double()] + ([] if injected is None else [injected.reshape(1), sums["sg_true_sq"].reshape(1)])

        def act(read: List[float]) -> None:
            scaled, finite = read[0] != 0, read[1] != 0
            if not (scaled and finite):
                window.update(zeros)
                if scaled:
                    window["sg_skipped"] = 1
            elif injected is not None:
                self._watch_swamping(read[2], read[3])

        self._pending.append((torch.cat([c.to(torch.float64) for c in check]), act))

    def _watch_swamping(self, injected_sq: float, true_sq: float) -> None:
        """One warning when the injected gradient stays SWAMP_RATIO times the true one."""
        swamped = injected_sq > SWAMP_RATIO**2 * true_sq
        self._swamped = self._swamped + 1 if swamped else 0
        if self._swamped == SWAMP_WINDOWS:
            logger.warning(
                f"synthetic gradients swamp the real ones: for {SWAMP_WINDOWS} updates the injected gradient "
                f"has been over {SWAMP_RATIO:g}x the true gradient it stands for (--sg-scale {self.scale:g}); "
                f"learning may stall: lower --sg-scale"
            )

    @property
    def _dtype(self) -> torch.dtype:
        return self.synthesizer.input_map.weight.dtype

    def _move_to(self, device: torch.device) -> None:
        """Move the synthesizer, its recurrent state and its optimizer's state to
        ``device``, the device of the state it is given: fairseq moves the model
        after the task has built this object (and a checkpoint may have been
        loaded into it on the CPU)."""
        if device == self.synthesizer.input_map.weight.device:
            return
        state = self.synthesizer.recurrent_state()
        self.synthesizer.to(device)
        self.synthesizer.load_recurrent_state(state)
        self.optimizer.load_state_dict(self.optimizer.state_dict())  # casts Adam's moments to the new device
