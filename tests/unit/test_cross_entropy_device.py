"""The block-wise cross-entropy keeps its buffers on the logits' device.

Checked without a GPU on PyTorch's "meta" device, which stands for any device
that is not the CPU: a buffer allocated without ``device=`` lands on the CPU
and mixes devices as it would with CUDA logits (there: a device-to-host copy
per block, then "Expected all tensors to be on the same device" in the sum).
Expected to fail until ``cross_entropy.py`` allocates its log-sum-exp buffer
(and its row indices) on ``logits.device``.
"""

import pytest
import torch

from altsg_fairseq.modules.cross_entropy import summed_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_the_loss_stays_on_the_logits_device(dtype):
    logits = torch.randn(6, 5, device="meta", dtype=dtype)
    loss = summed_cross_entropy(logits, torch.zeros(6, dtype=torch.long, device="meta"))
    assert loss.device.type == "meta" and loss.dtype == torch.float32 and loss.dim() == 0
