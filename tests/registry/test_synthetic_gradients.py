"""The single-backward meeting of synthetic and real gradients against the
original code's procedure (docs/method.md#the-single-backward-update),
written out independently in helpers.original_two_backward."""

import copy

import pytest
import torch
from fairseq.optim import build_optimizer

from helpers import build_from_flags, grads, original_two_backward, window_sample, zero_grads

V, B, T = 40, 3, 9


def build(tmp_path, *flags):
    """Task, model (float64) and criterion through fairseq's registries."""
    _, task, model, criterion = build_from_flags(
        tmp_path,
        "--embed-dim",
        "6",
        "--hidden-dim",
        "8",
        "--use-sg",
        "--sg-hidden",
        "5",
        "--dropout",
        "0.2",
        "--dropout-hidden",
        "0.1",
        "--weight-drop",
        "0.1",
        *flags,
        num_types=V,
    )
    task.dni.synthesizer.double()
    return task, model.double().train(), criterion


def own_packing(per_layer, base):
    """The flat state packed independently of the decoder, from per-layer tensors:
    a QRNN layer's cell (not its previous input); an LSTM's h and c; a GRU's h."""
    parts = [[p[0]] if base in ("qrnn", "gru") else [p[0], p[1]] for p in per_layer]
    return torch.cat([t for p in parts for t in p], 1)


def original_model_window(model, synth, s, base, synthetic: bool, textbook: bool, alpha=2.0, beta=1.0):
    """The original code's update of one window through the registered model, its start and end
    states packed independently of the decoder, its loss the cross-entropy with AR and TAR."""
    s0 = own_packing(model.decoder.carried_state_dict("train"), base)
    torch.testing.assert_close(s0, model.decoder.start_state("train", False, B), rtol=0, atol=0)

    def forward(start):
        logits, extra = model(s["net_input"]["src_tokens"], stream="train", state=start)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, V), s["target"].reshape(-1))
        raw, dropped = extra["raw_last"], extra["dropped_last"]
        loss = ce + alpha * dropped.pow(2).mean() + beta * (raw[1:] - raw[:-1]).pow(2).mean()
        sT = own_packing([list(layer) for layer in extra["final_state"]], base)
        torch.testing.assert_close(sT, model.decoder.flatten_state(extra["final_state"]), rtol=0, atol=0)
        return loss, sT

    original_two_backward(synth, s0, forward, synthetic, textbook)


BASES = [
    ("qrnn", core, synthetic, target)
    for core in ["qrnn", "gru", "lstm"]
    for synthetic in [False, True]
    for target in ["paper", "dni"]
]
BASES += [(base, "qrnn", synthetic, "paper") for base in ["lstm", "gru"] for synthetic in [False, True]]


@pytest.mark.parametrize("base,core,synthetic,target", BASES)
def test_single_backward_equals_the_original_code(tmp_path, base, core, synthetic, target):
    """For every synthesizer core on the QRNN, and the QRNN synthesizer on
    LSTM and GRU base models (whose carried state is h and c / h)."""
    task, model, criterion = build(tmp_path, "--rnn-type", base, "--sg-type", core, "--sg-target", target)
    synth = task.dni.synthesizer
    torch.manual_seed(0)
    tokens = torch.randint(4, V, (B, 2 * T + 1))
    task.dni.synthetic = synthetic
    # a first window gives a non-zero carried state and synthesizer state
    loss, _, _ = criterion(model, window_sample(tokens[:, : T + 1], True))
    loss.backward()
    zero_grads(model, synth)
    carried, synth_state = model.decoder.carried_state_dict("train"), copy.deepcopy(synth.state)

    torch.manual_seed(1)
    s = window_sample(tokens[:, T:], False)
    loss, ntokens, _ = criterion(model, s)
    (loss * 8.0).backward()  # as under a loss scale of 8
    log = task.dni.pop_stats()
    model_grads = {n: g / (8.0 * ntokens) for n, g in grads(model).items()}
    synth_grads = grads(synth)
    assert log["sg_on"] == int(synthetic) and log["sg_loss"] > 0

    zero_grads(model, synth)
    model.decoder.load_carried_state_dict("train", carried)
    synth.state = synth_state
    torch.manual_seed(1)
    # the textbook update (--sg-target dni): the hook sees the whole gradient once
    original_model_window(model, synth, s, base, synthetic, textbook=target == "dni")
    for name, g in grads(model).items():
        torch.testing.assert_close(model_grads[name], g, rtol=1e-6, atol=1e-9, msg=name)
    assert synth_grads.keys() == grads(synth).keys()
    for name, g in grads(synth).items():
        torch.testing.assert_close(synth_grads[name], g, rtol=1e-6, atol=1e-9, msg=name)


def test_logged_loss_is_the_real_one(tmp_path):
    task, model, criterion = build(tmp_path)
    tokens = torch.randint(4, V, (B, T + 1))
    task.dni.synthetic = True
    torch.manual_seed(2)
    loss, ntokens, log = criterion(model, window_sample(tokens, True))
    assert torch.allclose(loss, log["loss"])  # the injection and probe add zero
    assert task.dni.pop_stats()["sg_steps"] == 1
    model.eval()
    _, _, plain = criterion(model, window_sample(tokens, True))
    assert "sg_steps" not in plain and task.dni.pop_stats() == {}  # evaluation never uses the synthesizer


@pytest.mark.parametrize("fixed", [False, True])
def test_synthesizer_steps_unless_fixed(tmp_path, fixed):
    cfg, task, model, criterion = build_from_flags(
        tmp_path,
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.01",
        "--use-sg",
        *(["--fix-sg"] if fixed else []),
        num_types=V,
    )
    optimizer = build_optimizer(cfg.optimizer, list(model.parameters()))
    task.begin_epoch(1, model)
    before = copy.deepcopy(task.dni.synthesizer.state_dict())
    task.train_step(window_sample(torch.randint(4, V, (B, T + 1)), True), model, criterion, optimizer, 0)
    task.optimizer_step(optimizer, model, 0)
    after = task.dni.synthesizer.state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed != fixed
    assert all(p.grad is None for p in task.dni.synthesizer.parameters())
    if not fixed:
        assert task.dni.optimizer.param_groups[0]["weight_decay"] == 0.01  # the model optimizer's
        assert task.dni.optimizer.param_groups[0]["lr"] == 1e-3


def test_non_finite_synthetic_gradient_never_reaches_the_model(tmp_path):
    task, model, criterion = build(tmp_path)
    synthesizer = task.dni.synthesizer
    tokens = torch.randint(4, V, (B, 2 * T + 1))
    task.dni.synthetic = True
    torch.manual_seed(3)
    criterion(model, window_sample(tokens[:, : T + 1], True))[0].backward()
    zero_grads(model, synthesizer)
    with torch.no_grad():
        synthesizer.output_map.bias.fill_(float("nan"))  # force every prediction to NaN
    loss, _, _ = criterion(model, window_sample(tokens[:, T:], False))
    loss.backward()
    log = task.dni.pop_stats()
    assert log["sg_skipped"] == 1 and log["sg_on"] == 0
    assert synthesizer.state is None  # its recurrent state was reset
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the synthesizer gets no gradient from a non-finite error: zeros, not NaN
    assert all(p.grad is None or not p.grad.any() for p in synthesizer.parameters())
