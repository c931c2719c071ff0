"""Summed cross-entropy of a softmax over logits, in float32, a block of rows at a time.

``F.cross_entropy`` over (N, V) logits writes the (N, V) log-probabilities,
then in the backward pass a (N, V) one-hot gradient and the softmax's
gradient: several full passes over N x V numbers, and under autocast a float32
copy of the whole bfloat16 logits first. Here the rows go through in blocks
of about ``BLOCK_ELEMENTS`` numbers, each block widened to float32 in cache:
the forward keeps only each row's log-sum-exp (N numbers); the backward
writes ``grad * (softmax - one_hot)`` straight into a gradient of the logits'
dtype. The loss and the softmax are computed in float32 whatever the logits'
dtype (float64 stays float64).
"""

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 18  # numbers of one block of rows (1 MiB in float32)


def _rows(n_rows: int, vocab: int):
    step = max(1, BLOCK_ELEMENTS // max(vocab, 1))
    return ((i, min(i + step, n_rows)) for i in range(0, n_rows, step))


def _wide(t: Tensor) -> Tensor:
    return t.double() if t.dtype == torch.float64 else t.float()


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor) -> Tensor:
        n, vocab = logits.shape
        lse = torch.empty(n, dtype=_wide(logits[:0]).dtype, device=logits.device)
        for i, j in _rows(n, vocab):
            lse[i:j] = torch.logsumexp(_wide(logits[i:j]), dim=1)
        picked = _wide(logits.gather(1, target.unsqueeze(1)).squeeze(1))
        ctx.save_for_backward(logits, target, lse)
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target, lse = ctx.saved_tensors
        n, vocab = logits.shape
        out = torch.empty_like(logits)
        for i, j in _rows(n, vocab):
            p = _wide(logits[i:j]).sub(lse[i:j, None]).exp_()  # softmax (a fresh tensor: never the logits)
            p[torch.arange(j - i, device=p.device), target[i:j]] -= 1.0
            out[i:j] = p.mul_(grad)
        return out, None


def summed_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """sum_n -log softmax(logits[n])[target[n]], in float32 (float64 for float64 logits).

    logits: (N, V), any float dtype (bfloat16 under autocast); target: (N,)
    class indices in [0, V). Returns a 0-dim float32 tensor, in nats; its
    gradient with respect to the logits has their dtype. Equals
    ``F.cross_entropy(logits.float(), target, reduction="sum")``.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"summed_cross_entropy expects logits (N, V) and target (N,); got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    return _SummedCrossEntropy.apply(logits.contiguous(), target.contiguous())
