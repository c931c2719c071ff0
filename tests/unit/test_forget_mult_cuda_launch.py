"""The CUDA kernels' launches, checked without a GPU.

``forget_mult_cuda`` hands the kernels raw device addresses (no DLPack
export per tensor), so nothing checks a launch's arguments against the
kernel's parameters but this: every launch that ``forward`` and ``backward``
make, with the sequential kernels and the chunked scan, in float32 and
float64, is recorded on CPU tensors and compared with the parameter list of
its kernel in the CUDA source: the count, each pointer's element type, ints
where the kernel takes ints, the threads it is launched over, and that no
input is handed to a parameter the kernel writes.
"""

import re

import numpy as np
import pytest
import torch

from altsg_fairseq.modules import forget_mult_cuda
from altsg_fairseq.modules.forget_mult_cuda import SOURCE


def kernels():
    """name -> ([(type, name)], threads expression) from the source's __global__ kernels."""
    found = {}
    for name, params, body in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{([^}]*)\}", SOURCE):
        parsed = []
        for param in (p.strip() for p in params.split(",")):
            m = re.fullmatch(r"(const\s+)?(\w+)\s*(\*?)\s*(?:RESTRICT\s+)?(\w+)", param)
            assert m, param
            parsed.append(((m.group(1) or "") + m.group(2) + m.group(3), m.group(4)))
        threads = re.search(r"(COLUMN_THREAD\((\w+)\)|CHUNK_THREAD\((\w+),\s*(\w+)\))", body)
        found[name] = (parsed, threads.group(0))
    return found


KERNELS = kernels()


def test_the_source_has_the_eight_kernels():
    assert len(KERNELS) == 8 and all(name.startswith("fm_") for name in KERNELS)


@pytest.fixture
def launches(monkeypatch):
    recorded = []
    monkeypatch.setattr(
        forget_mult_cuda, "_launch", lambda name, count, t, *args: recorded.append((name, count, t, args))
    )
    return recorded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T,N,chunk", [(7, 5, None), (7, 5, 3), (2000, 8, None)])
def test_every_launch_matches_its_kernels_parameters(launches, dtype, T, N, chunk):
    f, x, grad_c = (torch.rand(T, N, dtype=dtype) for _ in range(3))
    h0 = torch.rand(N, dtype=dtype)
    c = forget_mult_cuda.forward(f, x, h0, chunk=chunk)
    outputs = forget_mult_cuda.backward(f, x, h0, c, grad_c, chunk=chunk)
    inputs = {"forward": {t.data_ptr() for t in (f, x, h0)}, "backward": {t.data_ptr() for t in (f, x, h0, c, grad_c)}}
    chunked = chunk or forget_mult_cuda.chunk_length(T, N)
    assert [name for name, *_ in launches] == (
        [
            "fm_chunk_forward_summary",
            "fm_chunk_forward_chain",
            "fm_chunk_forward_replay",
            "fm_chunk_backward_summary",
            "fm_chunk_backward_chain",
            "fm_chunk_backward_replay",
        ]
        if chunked
        else ["fm_seq_forward", "fm_seq_backward"]
    )
    written = set()
    for name, count, t, args in launches:
        params, threads = KERNELS[name]
        assert len(args) == len(params), name
        ints = {}
        for (kind, pname), arg in zip(params, args):
            if kind.rstrip("*").split()[-1] == "int":
                assert type(arg) is int, (name, pname)
                ints[pname] = arg
                continue
            assert isinstance(arg, torch.Tensor) and arg.is_contiguous(), (name, pname)
            element = kind.replace("const", "").strip().rstrip("*")
            assert arg.dtype == (torch.float64 if element == "double" else dtype), (name, pname)
            if not kind.startswith("const"):
                assert arg.data_ptr() not in inputs["forward" if "forward" in name else "backward"], (
                    name,
                    pname,
                )  # the kernel writes it: never an input
                written.add(arg.data_ptr())
        assert t.dtype == dtype
        names = re.findall(r"\w+", threads)[1:]
        expected = ints[names[0]] if len(names) == 1 else ints[names[0]] * ints[names[1]]
        assert count == expected, (name, threads)
    assert c.data_ptr() in written and all(g.data_ptr() in written for g in outputs)


def test_arguments_are_addresses_and_int32():
    a, b = torch.zeros(3, 4), torch.zeros(5, dtype=torch.float64)
    args = forget_mult_cuda.arguments((a, b, 7, 2**31 - 1))
    assert [type(v) for v in args] == [np.uint64, np.uint64, np.int32, np.int32]
    assert int(args[0]) == a.data_ptr() and int(args[1]) == b.data_ptr() and int(args[2]) == 7
    assert np.dtype(type(args[0])).itemsize == 8  # what CuPy passes as a pointer's 8 bytes
    with pytest.raises(ValueError, match="contiguous"):
        forget_mult_cuda.arguments((a.t(),))
    if torch.device("meta") != a.device:
        with pytest.raises(ValueError):
            forget_mult_cuda.arguments((a, torch.empty(2, device="meta")))
