"""A QRNN layer's work from its window's inputs: the gates' affine map and fo-pooling
(Bradbury et al., 2017).

    [G_z | G_f (| G_o)] = x W^T + b
    Z = tanh(G_z), F = sigmoid(G_f) [* zoneout mask], O = sigmoid(G_o)
    c_t = F_t * Z_t + (1 - F_t) * c_{t-1}    (the forget-mult)
    h_t = O_t * c_t                           (c_t without an output gate)

``fo_pool(x, weight, bias, cell, zoneout, training, output_gate)``: x (T, B, I),
weight (k * H, I) with the gates' rows in the order Z, F (, O) (k = 3 with an
output gate, else 2), bias (k * H) or None, cell (B, H) the previous cell
state or None (zeros). Returns (h (T, B, H) in the gates' dtype, c_T (B, H)),
both with graph; the cell states are float32 for half-precision gates.
Zoneout: in training F is multiplied by a Bernoulli(1 - p) mask drawn from
PyTorch's generator (a zero keeps the old state); in evaluation F is scaled
by (1 - p).

Two paths, equal to float rounding (``tests/unit/test_fo_pool.py``):
  * composite: ``F.linear`` and PyTorch's element-wise operations under
    autograd (any device, dtype and autocast);
  * fused, for float32 / float64 on a CPU with the compiled forget-mult, no
    autocast and (T, B, H) blocks of at least the recycled buffers' smallest
    (1 MiB): one autograd function whose backward is written out (once
    differentiable). Each gate is its own contiguous (T, B, H) block (one
    product per gate), the activations overwrite the products, and the
    forward's blocks and the backward's per-gate ones live in the CPU
    kernels' recycled buffers (``recycled_buffers.py``): a fresh large block
    is faulted in page by page, which cost the QRNN synthesizer, whose
    element-wise work is most of its step, more than the work itself.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .forget_mult import compiled_cpu_kernels, forget_mult_with_last


def fo_pool(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    cell: Optional[Tensor] = None,
    zoneout: float = 0.0,
    training: bool = False,
    output_gate: bool = True,
) -> Tuple[Tensor, Tensor]:
    """(h (T, B, H), c_T (B, H)) of the QRNN layer; see the module docstring."""
    gates = 3 if output_gate else 2
    if x.dim() != 3 or weight.dim() != 2 or weight.size(1) != x.size(2) or weight.size(0) % gates:
        raise ValueError(
            f"fo_pool expects x (T, B, D) and a weight of {gates} x H rows (Z, F{', O' if output_gate else ''}) "
            f"and D columns; got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    if cell is not None and cell.shape != (x.size(1), weight.size(0) // gates):
        raise ValueError(
            f"fo_pool expects a cell of shape (B, H) = {(x.size(1), weight.size(0) // gates)}; got {tuple(cell.shape)}"
        )
    kernels = compiled_cpu_kernels(x.device)
    fused = (
        kernels is not None
        and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled(x.device.type)
        # blocks the pool recycles; below that one product of all gates is the cheaper path
        and x.size(0) * x.size(1) * (weight.size(0) // gates) * x.element_size() >= kernels.buffers.min_bytes
    )
    if not fused:
        return _composite(x, weight, bias, cell, zoneout, training, output_gate)
    return _fused(x, weight, bias, cell, zoneout, training, output_gate, kernels)


def _fused(x, weight, bias, cell, zoneout, training, output_gate, kernels):
    T, B = x.shape[:2]
    H = weight.size(0) // (3 if output_gate else 2)
    keep = None
    if zoneout > 0:
        # the mask as the composite path draws it: same shape and dtype, so the same numbers
        keep = kernels.buffers.empty((T, B, H), x.dtype).bernoulli_(1 - zoneout) if training else 1 - zoneout
    h0 = x.new_zeros((B, H)) if cell is None else cell.to(x.dtype)
    return _FusedQRNN.apply(x, weight, bias, h0, keep, output_gate, kernels, cell is not None)


def _composite(x, weight, bias, cell, zoneout, training, output_gate):
    parts = F.linear(x, weight, bias).chunk(3 if output_gate else 2, dim=2)
    z, f = torch.tanh(parts[0]), torch.sigmoid(parts[1])
    if zoneout > 0:
        f = f * (f.new_empty(f.shape).bernoulli_(1 - zoneout) if training else 1 - zoneout)
    c, last = forget_mult_with_last(f, z, cell)  # float32 states, also from half-precision gates
    # the output in the gates' dtype: under autocast the next matrix product reads bfloat16 anyway
    h = torch.sigmoid(parts[2]) * c if output_gate else c
    return h.to(parts[0].dtype), last


class _FusedQRNN(torch.autograd.Function):
    """fo_pool's fused path: x (T, B, D), weight (k * H, D), bias (k * H) or None, h0 (B, H) (zeros
    when has_h0 is False), keep: None, the evaluation factor 1 - p, or the training mask (T, B, H);
    kernels: the compiled CPU kernels (``forget_mult.compiled_cpu_kernels``). Returns (h, c_T)."""

    @staticmethod
    def forward(ctx, x, weight, bias, h0, keep, output_gate, kernels, has_h0):
        T, B, _ = x.shape
        H = h0.size(1)
        empty = kernels.buffers.empty
        rows = x.reshape(T * B, -1)

        def gate(k):  # the k-th gate's pre-activations, (T * B, H), in a buffer of its own
            w = weight[k * H : (k + 1) * H].t()
            out = empty((T * B, H), x.dtype)
            return (
                torch.mm(rows, w, out=out) if bias is None else torch.addmm(bias[k * H : (k + 1) * H], rows, w, out=out)
            )

        z = gate(0).tanh_().view(T, B, H)
        s = gate(1).sigmoid_().view(T, B, H)  # F before zoneout
        f = s if keep is None else torch.mul(s, keep, out=empty((T, B, H), x.dtype))
        c = kernels.forward(f.view(T, -1), z.view(T, -1), h0.reshape(-1)).view(T, B, H)
        o, h = None, c
        if output_gate:
            o = gate(2).sigmoid_().view(T, B, H)
            h = torch.mul(o, c, out=empty((T, B, H), x.dtype))
        ctx.output_gate, ctx.kernels, ctx.has_h0 = output_gate, kernels, has_h0
        ctx.has_bias, ctx.mask = bias is not None, torch.is_tensor(keep)
        ctx.factor = None if ctx.mask else keep  # the evaluation factor, or None
        # saved, not kept on ctx: the mask goes with the other saved tensors once the backward has run
        ctx.save_for_backward(x, weight, h0, z, s, f, o, c, keep if ctx.mask else None)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a block of zeros
        # c_T as a tensor of its own: once the graph is gone a carried state does not keep c alive
        return h, c[-1].clone()

    @staticmethod
    @once_differentiable  # the backward is written with out= operations and the compiled kernels
    def backward(ctx, grad_h, grad_last):
        x, weight, h0, z, s, f, o, c, mask = ctx.saved_tensors
        T, B, H = c.shape
        keep, kernels = mask if ctx.mask else ctx.factor, ctx.kernels
        empty = kernels.buffers.empty
        # the gradient at every state through h (times O with an output gate); the kernel starts its
        # carried gradient with c_T's
        if ctx.output_gate and grad_h is not None:
            grad_c = torch.mul(grad_h, o, out=empty((T, B, H), c.dtype)).view(T, -1)
        else:
            grad_c = kernels.grad_rows(grad_h, T, B * H).to(c.dtype)
        grad_f, grad_z, grad_h0 = kernels.backward(
            f.view(T, -1), z.view(T, -1), h0.reshape(-1), c.view(T, -1), grad_c, grad_last
        )
        del grad_c
        grad_f, grad_z = grad_f.view(T, B, H), grad_z.view(T, B, H)
        if keep is not None:
            grad_f.mul_(keep)
        # the gates' gradients, each (T * B, H), overwriting the gradients they come from
        grads = [
            torch.ops.aten.tanh_backward.grad_input(grad_z, z, grad_input=grad_z).view(T * B, H),
            torch.ops.aten.sigmoid_backward.grad_input(grad_f, s, grad_input=grad_f).view(T * B, H),
        ]
        if ctx.output_gate:
            if grad_h is None:
                grads.append(torch.zeros((T * B, H), dtype=c.dtype))
            else:
                grad_o = torch.mul(grad_h, c, out=empty((T, B, H), c.dtype))
                grads.append(torch.ops.aten.sigmoid_backward.grad_input(grad_o, o, grad_input=grad_o).view(T * B, H))
        rows = x.reshape(T * B, -1)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = empty((T * B, rows.size(1)), x.dtype)
            for k, g in enumerate(grads):
                w = weight[k * H : (k + 1) * H]
                if k == 0:
                    torch.mm(g, w, out=grad_x)
                else:
                    grad_x.addmm_(g, w)
            grad_x = grad_x.view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.cat([g.t().mm(rows) for g in grads])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = torch.cat([g.sum(0) for g in grads])
        return grad_x, grad_weight, grad_bias, grad_h0.view(B, H) if ctx.has_h0 else None, None, None, None, None
