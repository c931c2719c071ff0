"""The QRNN forget-mult recurrence.

    c_t = f_t * x_t + (1 - f_t) * c_{t-1}

``forget_mult(f, x, h0=None)`` takes ``f`` and ``x`` of shape (T, B, H) and an
optional initial state ``h0`` of shape (B, H) (zeros when omitted) and returns
every state ``c`` of shape (T, B, H).

Backends:
  * ``reference``: a plain loop over time with autograd; the test oracle.
  * ``cpu``: compiled kernels (numba, ``forget_mult_cpu.py``).
  * ``cuda``: CuPy CUDA kernels (``forget_mult_cuda.py``), with a chunked
    parallel scan for long sequences with few columns.
``auto`` (the default) takes ``cuda`` for CUDA tensors and ``cpu`` for CPU
tensors, falling back to ``reference`` (with one warning) when the compiled
path is not installed. The switch: the ``backend`` argument, whose default
comes from the environment variable ``ALTSG_FORGET_MULT``
(auto / reference / cpu / cuda).
"""

import os
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import forget_mult_cuda
from .recycled_buffers import RecycledBuffers

BACKENDS = ("auto", "reference", "cpu", "cuda")


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype recurrent states are kept in for inputs of ``dtype``: float32
    for float16 / bfloat16 (mixed precision), otherwise ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class BackendUnavailable(RuntimeError):
    """A forget-mult backend was asked for that cannot run here."""


def _check_inputs(f: Tensor, x: Tensor, h0: Optional[Tensor]) -> None:
    if f.dim() != 3 or f.shape != x.shape:
        raise ValueError(
            f"forget_mult expects f and x of the same shape (T, B, H); got f {tuple(f.shape)} and x {tuple(x.shape)}"
        )
    if h0 is not None and h0.shape != f.shape[1:]:
        raise ValueError(f"forget_mult expects h0 of shape (B, H) = {tuple(f.shape[1:])}; got {tuple(h0.shape)}")


def forget_mult_reference(f: Tensor, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """Loop over time with autograd; slow and obviously correct.

    f, x: (T, B, H); h0: (B, H) or None. Returns c: (T, B, H).
    """
    _check_inputs(f, x, h0)
    c = h0
    states = []
    # unbind, not f[t]: indexing's backward would write a full-size zero
    # gradient per step (quadratic in T)
    for fx_t, keep_t in zip((f * x).unbind(0), (1 - f).unbind(0)):
        c = fx_t if c is None else fx_t + keep_t * c
        states.append(c)
    return torch.stack(states)


class _NumbaKernels:
    """The compiled CPU kernels on (T, N) tensors: f and x float32/float64 or
    bfloat16 (read as their bit patterns), h0 and c float32/float64. The
    states and the two gradients are written into recycled buffers (a fresh
    large block is faulted in page by page: ``recycled_buffers.py``)."""

    def __init__(self):
        from . import forget_mult_cpu  # imports numba

        self.impl = forget_mult_cpu
        self.reads = (torch.float32, torch.float64, torch.bfloat16)
        self.one_row_grad = True  # backward takes a (1, N) grad_c meaning the same row at every step
        self.takes_grad_last = True  # backward starts its carried gradient with c_T's
        self.buffers = RecycledBuffers()

    @staticmethod
    def grad_rows(grad: Optional[Tensor], T: int, N: int) -> Tensor:
        """An incoming gradient of the states (any shape of T x N numbers, or None: none) as
        ``backward`` reads it: (T, N) contiguous, or (1, N) when it is the same at every step
        (expanded from a sum or a mean: stride 0 over time), zeros for None."""
        if grad is None:
            return torch.zeros((1, N))
        if grad.stride(0) == 0:
            return grad[:1].reshape(1, N).contiguous()
        return grad.contiguous().view(T, N)

    @staticmethod
    def _array(t):
        # NumPy has no bfloat16: its kernels read and write the bit patterns
        return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()

    def forward(self, f, x, h0):
        c = self.buffers.empty(f.shape, h0.dtype)
        self.impl.run_columns(self.impl.forget_mult_forward, *f.shape, *map(self._array, (f, x, h0, c)))
        return c

    def backward(self, f, x, h0, c, grad_c, grad_last=None):
        """grad_last: the gradient at c_T besides grad_c's (N numbers), or None."""
        grad_f, grad_x = self.buffers.empty(f.shape, f.dtype), self.buffers.empty(x.shape, x.dtype)
        grad_h0 = torch.empty_like(h0)
        grad_last = torch.zeros_like(h0) if grad_last is None else grad_last.to(h0.dtype).reshape(-1).contiguous()
        arrays = (f, x, h0, c, grad_c, grad_last, grad_f, grad_x, grad_h0)
        self.impl.run_columns(self.impl.forget_mult_backward, *f.shape, *map(self._array, arrays))
        return grad_f, grad_x, grad_h0


_numba_kernels = None
_warned = set()


def _cpu_kernels(explicit: bool):
    global _numba_kernels
    if _numba_kernels is None:
        try:
            _numba_kernels = _NumbaKernels()
        except ImportError as e:
            if explicit:
                raise BackendUnavailable(
                    f"the compiled CPU forget-mult needs numba ({e}); pip install numba, "
                    f"or use ALTSG_FORGET_MULT=reference"
                ) from e
            if "numba" not in _warned:
                _warned.add("numba")
                warnings.warn(f"numba is not available ({e}): forget_mult uses the slow reference loop")
            return None
    return _numba_kernels


class _CompiledForgetMult(torch.autograd.Function):
    """Autograd around a kernel pair working on (T, N) contiguous tensors. Outputs
    (c (T, B, H), c_T (B, H)): the last state as a tensor of its own, whose gradient
    the CPU kernels take as the carried gradient's start (``c[-1]``'s backward
    would write a (T, B, H) block of zeros around it, and a carried state would
    keep the whole block of states alive)."""

    @staticmethod
    def forward(ctx, kernels, f, x, h0, has_h0):
        T, B, H = f.shape
        f2, x2, h02 = (t.contiguous().view(-1, B * H) for t in (f, x, h0))
        h02 = h02.view(B * H)
        c = kernels.forward(f2, x2, h02)
        ctx.kernels, ctx.has_h0, ctx.shape = kernels, has_h0, (T, B, H)
        ctx.save_for_backward(f2, x2, h02, c)
        ctx.set_materialize_grads(False)
        return c.view(T, B, H), c[-1].view(B, H).clone()

    @staticmethod
    @once_differentiable  # the kernels compute the gradients outside autograd
    def backward(ctx, grad_c, grad_last):
        f2, x2, h02, c = ctx.saved_tensors
        kernels, shape = ctx.kernels, ctx.shape
        if hasattr(kernels, "grad_rows"):  # the CPU kernels: one row for a gradient the same at every step
            grad_c = kernels.grad_rows(grad_c, *c.shape).to(c.dtype)
        else:
            grad_c = c.new_zeros(c.shape) if grad_c is None else grad_c.contiguous().view_as(c)
        if grad_last is None:
            grads = kernels.backward(f2, x2, h02, c, grad_c)
        elif getattr(kernels, "takes_grad_last", False):
            grads = kernels.backward(f2, x2, h02, c, grad_c, grad_last)
        else:  # the CUDA kernels: c_T's gradient added to the last row
            grad_c = grad_c.clone()
            grad_c[-1] += grad_last.reshape(-1)
            grads = kernels.backward(f2, x2, h02, c, grad_c)
        grad_f, grad_x, grad_h0 = grads
        return None, grad_f.view(shape), grad_x.view(shape), grad_h0.view(shape[1:]) if ctx.has_h0 else None, None


def compiled_cpu_kernels(device: torch.device):
    """The compiled CPU kernels (``forward``/``backward`` on (T, N) tensors, their
    ``buffers``) when forget_mult would use them for tensors on ``device``, else None."""
    kernels = _resolve(None, device)
    return kernels if isinstance(kernels, _NumbaKernels) else None


def _environment_backend() -> str:
    backend = os.environ.get("ALTSG_FORGET_MULT", "auto")
    if backend not in BACKENDS:
        raise ValueError(
            f"ALTSG_FORGET_MULT={backend} is not a forget-mult backend; choose one of {', '.join(BACKENDS)}"
        )
    return backend


def check_backend() -> str:
    """The backend that ``ALTSG_FORGET_MULT`` chooses for whole runs ("auto" when unset),
    checked before any work: ``ValueError`` when it names no backend,
    ``BackendUnavailable`` when it asks for CUDA where there is no GPU or no CuPy."""
    backend = _environment_backend()
    if backend == "cuda" and not forget_mult_cuda.available():
        missing = "a CUDA GPU" if not torch.cuda.is_available() else "CuPy"
        raise BackendUnavailable(
            f"ALTSG_FORGET_MULT=cuda needs {missing}: {forget_mult_cuda.INSTALL_HINT}; or unset it"
        )
    return backend


def _resolve(backend: Optional[str], device: torch.device):
    """The kernels to use, or None for the reference loop."""
    backend = backend or _environment_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown forget_mult backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return None
    if backend == "cuda" or (backend == "auto" and device.type == "cuda"):
        if device.type != "cuda":
            raise BackendUnavailable(
                "the CUDA forget-mult needs CUDA tensors; move the model to a GPU or use ALTSG_FORGET_MULT=auto"
            )
        if forget_mult_cuda.cupy_or_none() is None:
            if backend == "cuda":
                raise BackendUnavailable(
                    f"the CUDA forget-mult needs CuPy ({forget_mult_cuda.cupy_problem()}): "
                    f"{forget_mult_cuda.install_hint()}"
                )
            if "cupy" not in _warned:
                _warned.add("cupy")
                warnings.warn(
                    f"{forget_mult_cuda.cupy_problem()}: forget_mult uses the slow reference loop on the GPU; "
                    f"{forget_mult_cuda.install_hint()}"
                )
            return None
        return forget_mult_cuda
    if device.type != "cpu":
        if backend == "cpu":
            raise BackendUnavailable(f"the compiled CPU forget-mult needs CPU tensors, got {device.type}")
        return None
    return _cpu_kernels(explicit=backend == "cpu")


def forget_mult(f: Tensor, x: Tensor, h0: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """All states of the forget-mult recurrence.

    f, x: (T, B, H); h0: (B, H) or None (zeros). Returns c: (T, B, H) in
    float64 when f is float64, else in float32: states of float16/bfloat16
    gates (autocast) are accumulated and returned in float32, as the carried
    state is kept. ``backend``: see the module docstring.
    """
    return forget_mult_with_last(f, x, h0, backend)[0]


def forget_mult_with_last(
    f: Tensor, x: Tensor, h0: Optional[Tensor] = None, backend: Optional[str] = None
) -> Tuple[Tensor, Tensor]:
    """``forget_mult``'s states c (T, B, H) and the last one, c_T (B, H). On the
    compiled paths c_T is a tensor of its own: a gradient at c_T costs no
    (T, B, H) block (the CPU kernels start their carried gradient with it), and
    a detached c_T does not keep c alive; the reference loop gives c[-1]."""
    _check_inputs(f, x, h0)
    kept = state_dtype(f.dtype)
    kernels = _resolve(backend, f.device)
    if kernels is None:
        c = forget_mult_reference(f.to(kept), x.to(kept), None if h0 is None else h0.to(kept))
        return c, c[-1]
    gate_dtype = torch.promote_types(f.dtype, x.dtype)
    if gate_dtype not in getattr(kernels, "reads", (torch.float32, torch.float64)):
        gate_dtype = kept
    has_h0 = h0 is not None
    h0 = h0.to(kept) if has_h0 else f.new_zeros(f.shape[1:], dtype=kept)
    return _CompiledForgetMult.apply(kernels, f.to(gate_dtype), x.to(gate_dtype), h0, has_h0)
