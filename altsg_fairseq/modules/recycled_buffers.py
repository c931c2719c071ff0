"""Large result buffers handed out again once nothing uses them (the compiled CPU kernels' results).

A large block that PyTorch frees on a CPU goes back to the system (glibc
unmaps or trims it), and the next block of that size is faulted in page by
page when first written: about 0.3 ms a megabyte on this project's
benchmark machine (BENCHMARKS.md, "Forget-mult"), more than the forget-mult's
own work at the base shape. ``RecycledBuffers`` keeps such blocks: each is a
NumPy array whose memory the tensors handed out share (their storage keeps
the array alive while any tensor, view or saved tensor uses the memory), so
a buffer is free again exactly when the pool holds the only reference to its
array. Nothing process-wide changes: PyTorch's and glibc's allocators and
their settings stay as they are. The pool keeps at most ``limit_bytes`` of
buffers, in use or free, for the life of the process (a buffer is reused for
a block of exactly its size; ``clear()`` lets the free ones go), and smaller
blocks come from ``torch.empty``.
"""

import math
import sys
import threading
from typing import List, Sequence

import numpy as np
import torch

_ALIGN = 64  # bytes: an AVX-512 register, as PyTorch aligns its own CPU blocks


class RecycledBuffers:
    """A pool of uninitialised CPU tensors whose memory is reused once free.

    Args:
        limit_bytes: the most memory the pool keeps (in use or free); a block
            that would pass it is allocated outside the pool.
        min_bytes: smaller blocks come from ``torch.empty`` (glibc reuses
            small blocks without returning them).

    ``empty(shape, dtype)`` returns an uninitialised contiguous CPU tensor of
    ``shape`` and ``dtype``, in a free buffer of exactly its size when the
    pool has one. Thread-safe.
    """

    def __init__(self, limit_bytes: int = 512 << 20, min_bytes: int = 1 << 20):
        self.limit_bytes, self.min_bytes = limit_bytes, min_bytes
        self._arrays: List[np.ndarray] = []  # least recently handed out first
        self._lock = threading.Lock()
        # the count getrefcount gives for an array only the list holds, measured rather than assumed
        # (it is an interpreter detail)
        probe = [np.empty(1)]
        self._unused_refs = sys.getrefcount(probe[0])

    def empty(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            array = self._take(nbytes)
        if array is None:
            return torch.empty(shape, dtype=dtype)
        # a tensor of its own on the array's storage, not a view (autograd treats views apart,
        # e.g. an in-place operation on a custom function's output that is a view is an error)
        return torch.empty(0, dtype=dtype).set_(torch.from_numpy(array).untyped_storage(), 0, tuple(shape))

    def held_bytes(self) -> int:
        """Bytes of the buffers the pool keeps, in use or free."""
        with self._lock:
            return sum(a.nbytes for a in self._arrays)

    def clear(self) -> None:
        """Forget every buffer (those in use stay valid: their tensors keep them)."""
        with self._lock:
            self._arrays.clear()

    def _is_free(self, index: int) -> bool:
        return sys.getrefcount(self._arrays[index]) == self._unused_refs

    def _take(self, nbytes: int):
        """A free buffer of ``nbytes`` (now the most recent), a new one, or None (over the limit)."""
        for i in range(len(self._arrays)):
            if self._arrays[i].nbytes == nbytes and self._is_free(i):
                array = self._arrays.pop(i)
                self._arrays.append(array)
                return array
        held = sum(a.nbytes for a in self._arrays)
        i = 0
        while held + nbytes > self.limit_bytes and i < len(self._arrays):  # drop free ones, oldest first
            if self._is_free(i):
                held -= self._arrays.pop(i).nbytes
            else:
                i += 1
        if held + nbytes > self.limit_bytes:
            return None
        raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
        offset = -raw.ctypes.data % _ALIGN
        array = raw[offset : offset + nbytes]
        self._arrays.append(array)
        return array
