"""Recycled result buffers (modules/recycled_buffers.py): a buffer comes back only once no tensor, view or
saved tensor uses its memory; the pool keeps to its limit; and the compiled forget-mult's results stay
intact while they are alive, however many later calls recycle buffers."""

import torch

from altsg_fairseq.modules import forget_mult, forget_mult_reference
from altsg_fairseq.modules.recycled_buffers import RecycledBuffers

MB = 1 << 20


def test_a_buffer_returns_once_nothing_uses_it():
    pool = RecycledBuffers(limit_bytes=16 * MB, min_bytes=MB)
    a = pool.empty((MB // 4,))  # 1 MB of float32
    address = a.data_ptr()
    view = a[10:]
    del a
    b = pool.empty((MB // 4,))
    assert b.data_ptr() != address  # the view still uses the first buffer
    del view
    c = pool.empty((512, 512), torch.float32)  # the same bytes, another shape
    assert c.data_ptr() == address and c.shape == (512, 512) and c.is_contiguous()
    assert pool.held_bytes() == 2 * MB


def test_a_tensor_saved_for_backward_keeps_its_buffer():
    pool = RecycledBuffers(limit_bytes=16 * MB, min_bytes=MB)
    leaf = pool.empty((MB // 4,)).normal_().requires_grad_()
    address = leaf.data_ptr()
    loss = (leaf.detach().clone().requires_grad_() * leaf).sum()  # mul saves leaf
    del leaf
    assert pool.empty((MB // 4,)).data_ptr() != address
    del loss  # the graph, and with it the saved leaf, goes
    assert pool.empty((MB // 4,)).data_ptr() == address


def test_dtypes_alignment_and_small_blocks():
    pool = RecycledBuffers(limit_bytes=64 * MB, min_bytes=MB)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        t = pool.empty((3, MB // 2), dtype)
        assert t.dtype == dtype and t.shape == (3, MB // 2) and t.data_ptr() % 64 == 0
        t.fill_(1.5)  # writable, and holds its dtype's values
        assert t.double().sum().item() == 1.5 * t.numel()
    assert pool.held_bytes() == (6 + 12 + 3) * MB  # one buffer of each size
    small = pool.empty((10,))  # under min_bytes: torch.empty
    assert small.shape == (10,) and pool.held_bytes() == 21 * MB


def test_the_limit_drops_free_buffers_oldest_first_and_never_used_ones():
    pool = RecycledBuffers(limit_bytes=4 * MB, min_bytes=MB)
    kept = [pool.empty((MB // 4,)) for _ in range(3)]  # 3 MB in use
    extra = pool.empty((2 * MB // 4,))  # 2 MB more would pass the limit: allocated outside the pool
    assert pool.held_bytes() == 3 * MB
    del kept[0]
    bigger = pool.empty((MB // 4 + 16,))  # another size: the free buffer makes room
    assert pool.held_bytes() == 3 * MB + 64 and extra.numel() and bigger.numel()
    pool.clear()
    kept[1].fill_(2.0)  # what was handed out stays valid
    assert pool.held_bytes() == 0 and kept[1].sum().item() == 2.0 * (MB // 4)


def test_forget_mult_results_stay_intact_while_alive():
    """Many calls at one shape: every live result equals the reference loop's, so no buffer in use was
    handed out again."""
    torch.manual_seed(0)
    shape = (20, 4, 5000)  # 1.6 MB of float32 states: recycled
    results = []
    for _ in range(4):
        f, x, h0 = torch.rand(shape), torch.randn(shape), torch.randn(shape[1:])
        inputs = [t.clone().requires_grad_() for t in (f, x, h0)]
        c = forget_mult(*inputs, backend="cpu")
        grads = torch.autograd.grad(c, inputs, torch.ones(shape))
        results.append(((f, x, h0), c, grads))
    for (f, x, h0), c, grads in results:
        inputs = [t.clone().requires_grad_() for t in (f, x, h0)]
        expected = forget_mult_reference(*inputs)
        torch.testing.assert_close(c, expected, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, torch.autograd.grad(expected, inputs, torch.ones(shape))):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
