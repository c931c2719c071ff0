"""The AWD-LSTM regularisers: embedding dropout, locked dropout, weight drop."""

import torch.nn.functional as F
from torch import Tensor, nn


def embedding_dropout(embed: nn.Embedding, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Look up ``tokens`` with whole rows (words) of the table dropped.

    Each vocabulary row is zeroed with probability ``p`` and the kept rows are
    scaled by 1 / (1 - p); one mask per call, shared by every occurrence of a
    word. tokens: any shape of ints. Returns tokens.shape + (embed_dim,).
    """
    weight = embed.weight
    vectors = F.embedding(tokens, weight, embed.padding_idx)
    if training and p > 0:
        keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        # the looked-up rows of (weight * keep), without scaling the whole (V, E) table
        vectors = vectors * F.embedding(tokens, keep)
    return vectors


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: one mask per sequence, shared over time.

    x: (T, B, H). The mask has shape (1, B, H).
    """
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


class WeightDropLinear(nn.Linear):
    """``nn.Linear`` with DropConnect on its weight matrix (weight drop, AWD-LSTM).

    In training a fresh dropout mask is applied to the weight at every call
    (the bias is left alone); in evaluation the weight is used as is.

    Args:
        in_features, out_features: as ``nn.Linear``.
        weight_dropout: the probability of dropping each weight.

    Inputs:
        x: (..., in_features).

    Outputs:
        (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, weight_dropout: float = 0.0):
        super().__init__(in_features, out_features)
        self.weight_dropout = weight_dropout

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.dropped_weight(), self.bias)

    def dropped_weight(self) -> Tensor:
        """The weight one call uses: a fresh DropConnect mask applied in training, as is in evaluation."""
        return F.dropout(self.weight, self.weight_dropout, self.training)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weight_dropout={self.weight_dropout}"
