"""What the criterion logs: the synthetic-gradient diagnostics as fairseq aggregates them,
perplexities of any loss, and the task's warnings."""

import math

import pytest
import torch

from helpers import NO_DROPOUT, build_from_flags, logged, window_sample

V, B, T = 30, 2, 6


class Oracle:
    """Stands in for the synthesizer's forward: predicts a given gradient."""

    def __init__(self, prediction):
        self.prediction = prediction

    def __call__(self, carried):  # a leaf that wants a gradient, as the synthesizer's output
        return self.prediction.to(carried).clone().requires_grad_()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sg_cos_of_a_synthesizer_that_predicts_the_true_gradient(tmp_path, sign):
    """The true gradient of the criterion's per-token loss at the start state, computed here by
    autograd; a synthesizer predicting it (or its negative) logs sg_cos 1 (-1), overall and per layer."""
    _, task, model, criterion = build_from_flags(
        tmp_path, "--embed-dim", "6", "--hidden-dim", "5", "--use-sg", "--num-layers", "3", *NO_DROPOUT, num_types=V
    )
    model.double().train()
    task.dni.synthesizer.double()
    torch.manual_seed(0)
    tokens = torch.randint(4, V, (B, 2 * T + 1))
    criterion(model, window_sample(tokens[:, : T + 1], True))[0].backward()  # a carried state to start from
    task.dni.pop_stats()
    second = window_sample(tokens[:, T:], False)
    carried = model.decoder.carried_state_dict("train")
    start = model.decoder.start_state("train", False, B).requires_grad_()
    logits, extra = model(second["net_input"]["src_tokens"], stream="train", state=start)
    model.decoder.load_carried_state_dict("train", carried)  # the criterion starts from the same state
    ar, tar = criterion.activation_penalties(extra)
    loss = criterion.cross_entropy(model, logits, second["target"]) + second["ntokens"] * (ar + tar)
    (g_true,) = torch.autograd.grad(loss / second["ntokens"], start)
    object.__setattr__(task.dni.synthesizer, "forward", Oracle(sign * g_true))
    loss, _, log = criterion(model, second)
    loss.backward()
    log.update(task.dni.pop_stats())
    values = logged(criterion, [log])
    for key in ["sg_cos", "sg_cos_l0", "sg_cos_l1", "sg_cos_l2"]:
        assert values[key] == pytest.approx(sign, abs=1e-9), key
    assert values["sg_norm_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert values["sg_rel_error"] == pytest.approx(1 - sign, abs=1e-9)
    assert values["sg_loss"] == pytest.approx((1 - sign) ** 2 * float(g_true.pow(2).sum()) / g_true.numel(), rel=1e-9)


def test_sums_over_workers_and_windows_give_the_ratios_of_all_of_them(tmp_path):
    """Diagnostics are ratios of sums: two halves logged together equal the whole."""
    criterion = build_from_flags(tmp_path, "--embed-dim", "4", "--hidden-dim", "4", "--use-sg", num_types=V).criterion
    a = {
        "sg_steps": 1,
        "sg_elements": 4,
        "sg_on": 1,
        "sg_skipped": 0,
        "sg_loss": 2.0,
        "sg_hat_sq": 4.0,
        "sg_true_sq": 1.0,
        "sg_dot": 1.5,
        "ntokens": 5,
        "sample_size": 5,
        "loss": 10.0,
        "nll_loss": 9.0,
        "ar": 0.0,
        "tar": 0.0,
        "sg_injected_sq": 9.0,
        "sg_future_sq": 1.0,
    }
    b = dict(a, sg_loss=1.0, sg_hat_sq=1.0, sg_true_sq=3.0, sg_dot=-0.5, sg_injected_sq=0.0, sg_future_sq=0.0)
    values = logged(criterion, [a, b])
    assert values["sg_cos"] == pytest.approx(1.0 / math.sqrt(5.0 * 4.0))
    assert values["sg_norm_ratio"] == pytest.approx(math.sqrt(5.0 / 4.0))
    assert values["sg_rel_error"] == pytest.approx(math.sqrt(3.0 / 4.0))
    assert values["sg_inject_ratio"] == pytest.approx(3.0)
    assert values["sg_loss"] == pytest.approx(3.0 / 8)


@pytest.mark.parametrize("loss", [1e6, float("inf"), float("nan")])
def test_metrics_of_any_loss_are_logged(tmp_path, loss):
    criterion = build_from_flags(tmp_path, "--embed-dim", "4", "--hidden-dim", "4", num_types=V).criterion
    values = logged(criterion, [{"loss": loss, "nll_loss": loss, "ntokens": 1, "sample_size": 1, "ar": 0, "tar": 0}])
    assert math.isinf(values["ppl"]) or math.isnan(values["ppl"])


@pytest.mark.parametrize("flags,warns", [([], True), (["--max-epoch", "3"], False), (["--max-update", "9"], False)])
def test_no_limit_on_training_is_a_warning(tmp_path, caplog, flags, warns):
    _, task, model, _ = build_from_flags(tmp_path, "--embed-dim", "4", "--hidden-dim", "4", *flags, num_types=V)
    with caplog.at_level("WARNING"):
        task.begin_epoch(1, model)
    assert ("no --max-epoch or --max-update" in caplog.text) == warns
