"""Pure-PyTorch building blocks; nothing here imports fairseq."""

from .forget_mult import forget_mult, forget_mult_reference, state_dtype
from .cache_pointer import CachePointer
from .qrnn import QRNNLayer, QRNNState
from .recurrent_stack import CELLS, RecurrentStack, kept_state, map_state
from .rnn import RNNLayer, RNNState
from .regularizers import WeightDropLinear, embedding_dropout, locked_dropout

__all__ = [
    "CELLS",
    "CachePointer",
    "RecurrentStack",
    "RNNLayer",
    "RNNState",
    "kept_state",
    "map_state",
    "forget_mult",
    "forget_mult_reference",
    "state_dtype",
    "QRNNLayer",
    "QRNNState",
    "WeightDropLinear",
    "embedding_dropout",
    "locked_dropout",
]
