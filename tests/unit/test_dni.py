"""The DNI wing in plain PyTorch: BackwardInterface against the original code's
two-backward procedure (docs/method.md#the-single-backward-update, written
out independently in helpers.original_two_backward), its statistics against
hand-computed values, its optimiser step, its checkpoint state."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from altsg_fairseq.modules.denormals import denormals_flushed, flushing_denormals
from altsg_fairseq.dni import BackwardInterface, Synthesizer, SynthesizerMismatch
from altsg_fairseq.modules import RecurrentStack
from helpers import grads, original_two_backward, zero_grads

V, E, H, B, T = 17, 5, 6, 3, 7


class ToyLM(nn.Module):
    """Embedding -> recurrent stack -> linear softmax: enough of a language model."""

    def __init__(self, cell):
        super().__init__()
        self.embed, self.stack, self.out = nn.Embedding(V, E), RecurrentStack(cell, E, H, E, 2), nn.Linear(E, V)

    def forward(self, tokens, flat, template):
        h, final = self.stack(self.embed(tokens.t()), self.stack.unpack(flat, template))
        return self.out(h).transpose(0, 1), final


def setup(cell, core, seed=0, **interface_args):
    torch.manual_seed(seed)
    lm = ToyLM(cell).double()
    synthesizer = Synthesizer(core, hidden=4, noise_std=0.5).double()
    interface = BackwardInterface(synthesizer, **interface_args)
    tokens = torch.randint(V, (B, 2 * T + 1))
    with torch.no_grad():  # a first window: a non-zero carried state and synthesizer state
        _, first = lm(tokens[:, :T], lm.stack.pack(lm.stack(lm.embed(tokens[:, :T].t()))[1]), None)
        synthesizer(lm.stack.pack(first))
    return lm, interface, tokens[:, T : 2 * T], tokens[:, T + 1 :], first


def original_window(lm, synth, inputs, target, first, synthetic, textbook):
    """The original code's update of one window of the toy model, from its carried state ``first``."""

    def forward(start):
        logits, final = lm(inputs, start, first)
        return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1)), lm.stack.pack(final)

    original_two_backward(synth, lm.stack.pack(first), forward, synthetic, textbook)


CASES = [
    (cell, core, synthetic, target)
    for cell in ["qrnn", "lstm", "gru"]
    for core in ["qrnn", "gru", "lstm"]
    for synthetic in [False, True]
    for target in ["paper", "dni"]
    if core == "qrnn" or cell == "qrnn"
]


@pytest.mark.parametrize("cell,core,synthetic,target", CASES)
def test_one_backward_equals_the_original_two(cell, core, synthetic, target):
    lm, interface, inputs, target_tokens, first = setup(cell, core, target=target)
    synth = interface.synthesizer
    interface.synthetic = synthetic
    synth_state = copy.deepcopy(synth.state)
    tokens = target_tokens.numel()

    torch.manual_seed(1)
    start, probe = interface.wrap_start(lm.stack.pack(first), tokens)
    logits, final = lm(inputs, start, first)
    loss = F.cross_entropy(logits.reshape(-1, V), target_tokens.reshape(-1), reduction="sum")
    ((loss + probe + interface.inject(lm.stack.pack(final), tokens)) * 8.0).backward()  # a loss scale of 8
    stats = interface.pop_stats()
    mine = {n: g / (8.0 * tokens) if n.startswith("0.") else g for n, g in grads(lm, synth).items()}
    assert (
        stats["sg_on"] == int(synthetic)
        and stats["sg_loss"] > 0
        and stats["sg_elements"] == B * lm.stack.pack(first).size(1)
    )

    zero_grads(lm, synth)
    synth.state = synth_state
    torch.manual_seed(1)
    original_window(lm, synth, inputs, target_tokens, first, synthetic, textbook=target == "dni")
    theirs = grads(lm, synth)
    assert mine.keys() == theirs.keys() and any(n.startswith("1.") for n in theirs)
    for name, g in theirs.items():
        torch.testing.assert_close(mine[name], g, rtol=1e-6, atol=1e-9, msg=name)


def test_statistics_and_the_synthesizers_gradient_by_hand():
    """With loss = sum(W * s), the true per-token gradient at s is W / tokens."""
    torch.manual_seed(2)
    synthesizer = Synthesizer("gru", hidden=3, noise_std=0.0).double()
    interface = BackwardInterface(synthesizer)
    s = torch.randn(2, 4, dtype=torch.float64)
    W = torch.randn(2, 4, dtype=torch.float64)
    for synthetic, k in [(False, 1.0), (True, 2.0)]:  # the paper's update doubles in synthetic phases
        interface.synthetic = synthetic
        synthesizer.reset_state()
        g_hat = synthesizer(s).detach()
        synthesizer.reset_state()
        start, probe = interface.wrap_start(s, tokens=10)
        ((start * W).sum() + probe).backward()
        stats = interface.pop_stats()
        g_true = W / 10
        assert float(stats["sg_loss"]) == pytest.approx(float((g_hat - g_true).pow(2).sum()), rel=1e-12)
        for key, value in [
            ("sg_hat_sq", g_hat.pow(2).sum()),
            ("sg_true_sq", g_true.pow(2).sum()),
            ("sg_dot", (g_hat * g_true).sum()),
        ]:
            assert float(stats[key]) == pytest.approx(float(value), rel=1e-12), key
        # the output map's bias gets the sum over elements of the output gradient 2 (k g_hat - g_true)
        expected = float((2 * (k * g_hat - g_true)).sum())
        assert float(synthesizer.output_map.bias.grad) == pytest.approx(expected, rel=1e-10)
        zero_grads(synthesizer)
    assert interface.pop_stats() == {}


def test_nothing_is_injected_in_real_phases_and_a_broken_prediction_never_is():
    interface = BackwardInterface(Synthesizer("qrnn", hidden=3))
    end = torch.randn(2, 5, requires_grad=True)
    assert float(interface.inject(end, 10)) == 0.0 and not interface.inject(end, 10).requires_grad
    interface.synthetic = True
    interface.wrap_start(torch.randn(2, 5), 10)
    term = interface.inject(end, 10)
    term.backward()
    assert float(term) == 0.0 and end.grad.abs().sum() > 0  # zero-valued, with a gradient
    with torch.no_grad():
        interface.synthesizer.output_map.bias.fill_(float("nan"))
    interface.wrap_start(torch.randn(2, 5), 10)
    assert not interface.inject(end, 10).requires_grad
    stats = interface.pop_stats()
    assert stats["sg_skipped"] == 1 and stats["sg_on"] == 0 and interface.synthesizer.state is None


def grad_or_zeros(p):
    """A parameter's gradient; zeros where the window did not use it (a GRU's W_hh without a state yet)."""
    return p.grad.clone() if p.grad is not None else torch.zeros_like(p)


def train_once(interface, s, W):
    start, probe = interface.wrap_start(s, tokens=4)
    ((start * W).sum() + probe).backward()


def test_step_sums_workers_averages_windows_and_takes_the_weight_decay():
    torch.manual_seed(3)
    s, W = torch.randn(2, 3), torch.randn(2, 3)
    one = BackwardInterface(Synthesizer("gru", hidden=3, noise_std=0.0), lr=0.01)
    two, ref = copy.deepcopy(one), copy.deepcopy(one.synthesizer)
    train_once(one, s, W)
    train_once(two, s, W)
    train_once(two, s, W)  # two accumulated windows of the same gradient
    expected = {n: grad_or_zeros(p) * 2 for n, p in one.synthesizer.named_parameters()}  # "the other worker's" too

    def all_reduce(flat):  # a second worker with the same gradient
        flat.mul_(2)

    one.step(weight_decay=0.5, windows=1, all_reduce=all_reduce)
    two.step(weight_decay=0.5, windows=2, all_reduce=all_reduce)
    assert one.optimizer.param_groups[0]["weight_decay"] == 0.5
    for p, q in zip(one.synthesizer.parameters(), two.synthesizer.parameters()):
        torch.testing.assert_close(p, q)
    assert all(p.grad is None for p in one.synthesizer.parameters())
    adam = torch.optim.Adam(ref.parameters(), lr=0.01, weight_decay=0.5)
    for n, p in ref.named_parameters():
        p.grad = expected[n]
    adam.step()
    for p, q in zip(ref.parameters(), one.synthesizer.parameters()):
        torch.testing.assert_close(p, q)
    frozen = BackwardInterface(Synthesizer("gru", hidden=3), frozen=True)
    before = copy.deepcopy(frozen.synthesizer.state_dict())
    train_once(frozen, s, W)
    frozen.step(all_reduce=lambda flat: pytest.fail("a frozen synthesizer takes no part in the reduction"))
    assert all(torch.equal(before[k], v) for k, v in frozen.synthesizer.state_dict().items())


def test_state_dict_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(4)
    interface = BackwardInterface(Synthesizer("qrnn", hidden=4))
    train_once(interface, torch.randn(2, 3), torch.randn(2, 3))
    interface.step()
    torch.save(interface.state_dict(), tmp_path / "dni.pt")
    state = torch.load(tmp_path / "dni.pt")  # PyTorch's default safe loading
    assert BackwardInterface.found_in(state) and not BackwardInterface.found_in({"carried": []})
    other = BackwardInterface(Synthesizer("qrnn", hidden=4))
    other.load_state_dict(state)
    for a, b in zip(interface.synthesizer.recurrent_state(), other.synthesizer.recurrent_state()):
        torch.testing.assert_close(a, b)
    assert other.optimizer.state_dict()["state"].keys() == interface.optimizer.state_dict()["state"].keys()
    with pytest.raises(SynthesizerMismatch) as caught:
        BackwardInterface(Synthesizer("gru", hidden=4)).load_state_dict(state)
    assert caught.value.saved == {"core": "qrnn", "hidden": 4, "layers": 1}


@pytest.mark.parametrize("bad", [{"target": "textbook"}, {"lr": -1.0}])
def test_bad_arguments_are_value_errors(bad):
    with pytest.raises(ValueError):
        BackwardInterface(Synthesizer("gru", hidden=2), **bad)
    with pytest.raises(ValueError):
        Synthesizer("transformer")


@pytest.mark.parametrize("before", [False, True])
def test_denormal_flushing_is_scoped(before):
    torch.set_flush_denormal(before)
    try:
        assert flushing_denormals() == before
        with denormals_flushed():
            assert flushing_denormals()
        assert flushing_denormals() == before
        with denormals_flushed(enabled=False):
            assert flushing_denormals() == before
    finally:
        torch.set_flush_denormal(False)


class TwoWorkers:
    """Worker ``rank`` of two, the other worker's rows given: what DataParallelRows does with a collective."""

    def __init__(self, rank, others):
        self.rank, self.others = rank, list(others)  # the other worker's tensors, in the order gathered

    def gather(self, t):
        other = self.others.pop(0)
        return torch.cat([t, other] if self.rank == 0 else [other, t])

    def mine(self, t):
        b = t.size(0) // 2
        return t[self.rank * b : (self.rank + 1) * b]


@pytest.mark.parametrize("core", ["qrnn", "gru"])
def test_workers_together_equal_one_worker_holding_all_rows(core):
    """The QRNN synthesizer's recurrence runs across all rows' elements: each worker runs it over
    all rows and keeps its own predictions; their summed gradients are one worker's."""
    torch.manual_seed(5)
    s, W = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    one = BackwardInterface(Synthesizer(core, hidden=3).double())
    workers = [copy.deepcopy(one) for _ in range(2)]
    for synthetic in (False, True):  # the second window also injects at its end state
        for rank, worker in enumerate(workers):
            other = s[2:] if rank == 0 else s[:2]
            worker.rows = TwoWorkers(rank, [other, other * 1.5])  # its start, then its end state
        for interface, rows in [(one, slice(0, 4)), (workers[0], slice(0, 2)), (workers[1], slice(2, 4))]:
            interface.synthetic = synthetic
            torch.manual_seed(6)  # fairseq seeds every worker alike: the same zoneout masks
            start, probe = interface.wrap_start(s[rows], tokens=24)
            end = start * 1.5
            ((end * W[rows]).sum() + probe + interface.inject(end, 24)).backward()
        summed = [
            grad_or_zeros(a) + grad_or_zeros(b)
            for a, b in zip(workers[0].synthesizer.parameters(), workers[1].synthesizer.parameters())
        ]
        for g, p in zip(summed, one.synthesizer.parameters()):
            torch.testing.assert_close(g, grad_or_zeros(p), rtol=1e-10, atol=1e-12)
        for a, b in zip(one.synthesizer.recurrent_state(), workers[1].synthesizer.recurrent_state()):
            torch.testing.assert_close(a, b)  # every worker holds the one worker's recurrent state
        zero_grads(one.synthesizer, *(w.synthesizer for w in workers))


class Oracle(torch.nn.Module):
    """A synthesizer stand-in that predicts a given gradient."""

    def __init__(self, synthesizer, prediction):
        super().__init__()
        self.inner, self.prediction = synthesizer, prediction

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, carried):
        return self.prediction.to(carried)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_statistics_of_a_perfect_and_an_opposite_prediction(sign):
    """A synthesizer that predicts exactly the true gradient (or its negative): cosine 1 (-1) overall
    and per layer, norm ratio 1, relative error 0 (2); the injection is paired with the next true gradient."""
    torch.manual_seed(7)
    s, W = torch.randn(3, 5, dtype=torch.float64, requires_grad=True), torch.randn(3, 5, dtype=torch.float64)
    interface = BackwardInterface(Synthesizer("gru", hidden=3).double(), scale=0.5, layer_sizes=[2, 3])
    interface.synthesizer = Oracle(interface.synthesizer, sign * W / 10)
    interface.synthetic = True
    totals = {}
    for window in range(2):
        start, probe = interface.wrap_start(s, tokens=10)
        end = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)  # (here) not a function of start
        ((start * W).sum() + probe + interface.inject(end, 10)).backward()
        totals[window] = {k: float(v) for k, v in interface.pop_stats().items()}
    first, second = totals[0], totals[1]
    for suffix in ["", "_l0", "_l1"]:
        cos = first[f"sg_dot{suffix}"] / (first[f"sg_hat_sq{suffix}"] * first[f"sg_true_sq{suffix}"]) ** 0.5
        assert cos == pytest.approx(sign, abs=1e-12), suffix
    assert first["sg_hat_sq"] == pytest.approx(first["sg_true_sq"], rel=1e-12)
    assert (first["sg_loss"] / first["sg_true_sq"]) ** 0.5 == pytest.approx(1 - sign, abs=1e-12)
    assert first["sg_injected_sq"] == first["sg_future_sq"] == 0  # the first window follows no injection
    # the second window's true gradient is what the first window's injection (0.5 x W / 10) stood in for
    assert second["sg_injected_sq"] == pytest.approx(0.25 * second["sg_future_sq"], rel=1e-12)


def test_one_warning_when_the_injection_swamps_the_true_gradient(caplog):
    from altsg_fairseq.dni.interface import SWAMP_RATIO, SWAMP_WINDOWS

    s, W = torch.randn(2, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, dtype=torch.float64)
    interface = BackwardInterface(Synthesizer("gru", hidden=3).double(), scale=1e6)
    interface.synthesizer = Oracle(interface.synthesizer, W / 4)
    interface.synthetic = True
    with caplog.at_level("WARNING"):
        for _ in range(SWAMP_WINDOWS + 5):
            start, probe = interface.wrap_start(s, tokens=4)
            end = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
            ((start * W).sum() + probe + interface.inject(end, 4)).backward()
            interface.pop_stats()
    warnings = [r.message for r in caplog.records if "swamp" in r.message]
    assert len(warnings) == 1 and f"over {SWAMP_RATIO:g}x" in warnings[0] and "--sg-scale 1e+06" in warnings[0]


def reference_synthesizer(synthesizer, carried):
    """The synthesizer as written plainly: input_map -> the core module (QRNN layers, or torch's GRU/LSTM) -> output_map."""
    x = synthesizer.input_map(carried.reshape(-1, 1)).unsqueeze(1)  # (N, 1, hidden)
    if synthesizer.core_type == "qrnn":
        state = synthesizer.state or [None] * len(synthesizer.core)
        new = []
        for n, layer in enumerate(synthesizer.core):
            x, s = layer(x, state[n])
            new.append(s.detach())
            if n < len(synthesizer.core) - 1:
                x = torch.nn.functional.dropout(x, synthesizer.dropout, synthesizer.training)
        synthesizer.state = new
    else:
        fits = synthesizer.state is not None and (
            synthesizer.state[0] if isinstance(synthesizer.state, tuple) else synthesizer.state
        ).size(1) == x.size(0)
        x, state = synthesizer.core(x, synthesizer.state if fits else None)
        synthesizer.state = tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()
    return synthesizer.output_map(x.squeeze(1)).view_as(carried)


@pytest.mark.parametrize("core", ["qrnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_synthesizers_fast_first_layer_equals_the_plain_one(core, layers):
    """Its first layer takes the rank-1 input_map output as two (QRNN window 2: five) columns;
    outputs, carried state and gradients equal the plain modules', call after call."""
    torch.manual_seed(0)
    fast = Synthesizer(core, 6, layers=layers, dropout=0.0, noise_std=0.0).double().train()
    plain = copy.deepcopy(fast)
    x = torch.randn(3, 5, dtype=torch.float64)
    for call in range(3):
        torch.manual_seed(call)  # the QRNN core's zoneout masks, drawn alike
        a = fast(x * (call + 1))
        torch.manual_seed(call)
        b = reference_synthesizer(plain, x * (call + 1))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for s, t in zip(fast.recurrent_state(), plain.recurrent_state()):
        torch.testing.assert_close(s, t, rtol=1e-12, atol=1e-14)
    torch.manual_seed(9)
    fast_grads = torch.autograd.grad(fast(x).sum(), list(fast.parameters()))
    torch.manual_seed(9)
    plain_grads = torch.autograd.grad(reference_synthesizer(plain, x).sum(), list(plain.parameters()))
    for g, h in zip(fast_grads, plain_grads):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("core", ["qrnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_synthesizer_saved_with_the_old_map_names_loads(core, layers):
    """Checkpoints written before the rename name the maps encoder.* and decoder.*: they load
    (alone and through BackwardInterface) and predict what the saved synthesizer predicts."""
    torch.manual_seed(5)
    saved = BackwardInterface(Synthesizer(core, hidden=4, layers=layers, noise_std=0.0))
    train_once(saved, torch.randn(2, 3), torch.randn(2, 3))
    saved.step()
    state = saved.state_dict()
    weights = state["synthesizer"]
    old = {
        "encoder.weight": weights["input_map.weight"],
        "encoder.bias": weights["input_map.bias"],
        "decoder.weight": weights["output_map.weight"],
        "decoder.bias": weights["output_map.bias"],
        **{k: v for k, v in weights.items() if k.startswith("core.")},
    }
    assert len(old) == len(weights)
    recurrent = saved.synthesizer.recurrent_state()
    assert recurrent
    x = torch.randn(2, 3)
    want = saved.synthesizer.eval()(x)

    alone = Synthesizer(core, hidden=4, layers=layers, noise_std=0.0)
    alone.load_state_dict(old)  # strict: no key missing or left over
    alone.load_recurrent_state(recurrent)
    assert torch.equal(alone.eval()(x), want)

    other = BackwardInterface(Synthesizer(core, hidden=4, layers=layers, noise_std=0.0))
    other.load_state_dict({**state, "synthesizer": old})
    assert torch.equal(other.synthesizer.eval()(x), want)
    assert sorted(old) == sorted(
        [
            "encoder.weight",
            "encoder.bias",
            "decoder.weight",
            "decoder.bias",
            *(k for k in weights if k.startswith("core.")),
        ]
    )  # the caller's dict is kept
