"""``adam_l2``: the original code's Adam with L2 weight decay, through fairseq's optimizer registry."""

import torch
from fairseq.optim import build_optimizer

from helpers import config_from_flags, write_dictionary


def optimizer_for(params, name, tmp_path):
    write_dictionary(tmp_path, 5)
    cfg = config_from_flags(
        tmp_path, "--optimizer", name, "--lr", "0.01", "--weight-decay", "0.1", "--adam-betas", "(0.8, 0.9)"
    )
    return build_optimizer(cfg.optimizer, params)


def hand_adam_l2(p, grads, lr=0.01, wd=0.1, b1=0.8, b2=0.9, eps=1e-8):
    """Adam with the decay added to the gradient, written out."""
    m = v = torch.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return p


def run(name, start, grads, tmp_path):
    p = torch.nn.Parameter(start.clone())
    opt = optimizer_for([p], name, tmp_path)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def test_adam_l2_matches_the_hand_written_update(tmp_path):
    torch.manual_seed(0)
    start = torch.randn(5, dtype=torch.float64)
    grads = [torch.randn(5, dtype=torch.float64) for _ in range(4)]
    torch.testing.assert_close(run("adam_l2", start, grads, tmp_path), hand_adam_l2(start, grads))
    # fairseq's adam decays outside the moments (AdamW): a different trajectory
    assert not torch.allclose(run("adam", start, grads, tmp_path), hand_adam_l2(start, grads), rtol=1e-4)
