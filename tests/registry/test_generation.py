"""Generation through fairseq's own tools, with the recurrent state carried incrementally."""

import pytest
import torch
from fairseq import options
from fairseq.sequence_generator import EnsembleModel

from helpers import REPO, build_from_flags

WORDS = [f"w{i}" for i in range(30)]


def build(tmp_path, rnn_type):
    """Task, generator arguments and an untrained model (eval mode) through fairseq's registries."""
    (tmp_path / "dict.txt").write_text("".join(f"{w} 1\n" for w in WORDS))
    torch.manual_seed(0)
    _, task, model, _ = build_from_flags(
        tmp_path, "--rnn-type", rnn_type, "--embed-dim", "8", "--hidden-dim", "12", "--num-layers", "3"
    )
    model.eval()
    with torch.no_grad():  # sharper, less uniform predictions than the initialisation's
        for p in model.parameters():
            p.mul_(8)
    return task, model


def generate(task, model, prompts, **gen_args):
    """Continue ``prompts`` (lists of words) the way fairseq's hub interface does."""
    tokens = [task.dictionary.encode_line(" ".join(p), add_if_not_exist=False) for p in prompts]
    dataset = task.build_dataset_for_inference(tokens, [len(t) for t in tokens])
    batch = next(iter(task.get_batch_iterator(dataset, max_sentences=8).next_epoch_itr(shuffle=False)))
    parser = options.get_generation_parser(default_task="alternating_lm")
    args = options.parse_args_and_arch(parser, [task.cfg.data, "--user-dir", str(REPO / "altsg_fairseq")])
    for name, value in dict(max_len_b=6, **gen_args).items():
        setattr(args, name, value)
    generator = task.build_generator([model], args)
    hypos = task.inference_step(generator, [model], batch)
    order = batch["id"].tolist()
    return [hypos[order.index(i)] for i in range(len(prompts))]


PROMPTS = [["w5", "w9", "w11"], ["w7"], ["w20", "w21"]]


@pytest.mark.parametrize("rnn_type", ["qrnn", "lstm", "gru"])
@pytest.mark.parametrize("beam", [1, 3])
def test_incremental_generation_equals_rerunning_the_prefix(tmp_path, monkeypatch, rnn_type, beam):
    """The same hypotheses and scores as a generator that runs the whole
    prefix from zero state at every step (beam 3 exercises the reordering)."""
    task, model = build(tmp_path, rnn_type)
    steps = []
    original = model.decoder.rnn.forward
    monkeypatch.setattr(
        model.decoder.rnn, "forward", lambda x, state=None: steps.append(x.size(0)) or original(x, state)
    )
    incremental = generate(task, model, PROMPTS, beam=beam, nbest=beam)
    # with the state kept, every step (</s>, the forced prompt, the continuation) runs one token
    assert set(steps) == {1}
    n_incremental = len(steps)
    steps.clear()
    monkeypatch.setattr(EnsembleModel, "has_incremental_states", lambda self: False)
    rerun = generate(task, model, PROMPTS, beam=beam, nbest=beam)
    assert max(steps) > 1 and len(steps) == n_incremental  # the prefix re-run at every step
    for inc, ref, prompt in zip(incremental, rerun, PROMPTS):
        assert len(inc) == len(ref) == beam
        for a, b in zip(inc, ref):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"], rtol=1e-5, atol=1e-5)
        words = task.dictionary.string(inc[0]["tokens"]).split()
        assert words[: len(prompt)] == prompt and len(words) > len(prompt)


def test_sampling_with_a_temperature(tmp_path):
    task, model = build(tmp_path, "qrnn")
    greedy = generate(task, model, PROMPTS, beam=1)
    torch.manual_seed(5)
    cold = generate(task, model, PROMPTS, beam=1, sampling=True, temperature=0.02)
    assert [h[0]["tokens"].tolist() for h in cold] == [h[0]["tokens"].tolist() for h in greedy]
    draws = set()
    for seed in range(6):
        torch.manual_seed(seed)
        hot = generate(task, model, [PROMPTS[1]], beam=1, sampling=True, temperature=3.0)
        draws.add(tuple(hot[0][0]["tokens"].tolist()))
    assert len(draws) > 1  # a high temperature samples different continuations


def test_every_temperature_samples_and_a_tiny_one_is_greedy(tmp_path):
    """At a low temperature a forced token's (the prompt's, the final </s>'s) probability underflows:
    sampling must still draw it, keep its true score, and a tiny temperature must give the greedy words."""
    task, model = build(tmp_path, "qrnn")
    prompts = PROMPTS + [[]]
    greedy = generate(task, model, prompts, beam=1)
    for temperature in [1e-40, 1e-8, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0]:
        torch.manual_seed(0)
        sampled = generate(task, model, prompts, beam=1, sampling=True, temperature=temperature)
        for hypo, ref, prompt in zip(sampled, greedy, prompts):
            words = task.dictionary.string(hypo[0]["tokens"]).split()
            assert words[: len(prompt)] == prompt, temperature
            assert not torch.isnan(hypo[0]["positional_scores"]).any(), temperature
            if temperature <= 1e-8:
                assert hypo[0]["tokens"].tolist() == ref[0]["tokens"].tolist(), temperature
    torch.manual_seed(0)
    sampled = generate(task, model, prompts, beam=1, sampling=True)
    for hypo, ref, prompt in zip(sampled, greedy, prompts):  # the forced prompt words keep their true scores
        torch.testing.assert_close(
            hypo[0]["positional_scores"][: len(prompt)], ref[0]["positional_scores"][: len(prompt)]
        )


def test_task_and_model_state_the_same_length_limit(tmp_path):
    """The recurrence has no length limit: the task and the model give fairseq the same large number
    (a number, not None: SequenceGenerator takes min() over the models' limits)."""
    from fairseq.utils import resolve_max_positions

    task, model = build(tmp_path, "qrnn")
    assert task.max_positions() == model.max_positions() == EnsembleModel([model]).max_decoder_positions() == 10**9
    assert resolve_max_positions(task.max_positions(), model.max_positions()) == 10**9
