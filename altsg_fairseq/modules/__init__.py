"""Pure-PyTorch building blocks; nothing here imports fairseq."""

from .forget_mult import forget_mult, forget_mult_reference
from .qrnn import QRNNLayer, QRNNState
from .regularizers import WeightDropLinear, embedding_dropout, locked_dropout

__all__ = [
    "forget_mult",
    "forget_mult_reference",
    "QRNNLayer",
    "QRNNState",
    "WeightDropLinear",
    "embedding_dropout",
    "locked_dropout",
]
