"""Synthetic gradients (DNI) for carried recurrent state: pure PyTorch, no fairseq.

``Synthesizer`` predicts the gradient at every number of a carried state;
``TrainSynthesizer`` / ``inject`` are where synthetic and real gradients
meet inside one backward pass; ``BackwardInterface`` is the one object that
owns the method (synthesizer, optimiser, phase, recurrent state, statistics,
checkpoint state).
"""

from .interface import TARGETS, BackwardInterface, SynthesizerMismatch
from .synthetic_gradient import TrainSynthesizer, inject
from .synthesizer import CORES, Synthesizer

__all__ = ["BackwardInterface", "CORES", "Synthesizer", "SynthesizerMismatch", "TARGETS", "TrainSynthesizer", "inject"]
