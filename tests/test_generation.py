"""Generation through fairseq's own tools, with the recurrent state carried incrementally."""

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.sequence_generator import EnsembleModel

from conftest import REPO, run_cli

WORDS = [f"w{i}" for i in range(30)]


def build(tmp_path, rnn_type):
    """Task, generator arguments and an untrained model (eval mode) through fairseq's registries."""
    (tmp_path / "dict.txt").write_text("".join(f"{w} 1\n" for w in WORDS))
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(tmp_path), "--user-dir", str(REPO / "altsg_fairseq"), "--task", "alternating_lm", "--arch", "qrnn_lm",
        "--rnn-type", rnn_type, "--embed-dim", "8", "--hidden-dim", "12", "--num-layers", "3",
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
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
    monkeypatch.setattr(model.decoder.rnn, "forward", lambda x, state=None: steps.append(x.size(0)) or original(x, state))
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


def test_fairseq_interactive_and_the_hub_sample_from_a_trained_model(trained, sample_bin):
    save, _ = trained
    proc = run_cli("fairseq-interactive", sample_bin, "--user-dir", REPO / "altsg_fairseq", "--task", "alternating_lm",
                   "--path", save / "checkpoint_last.pt", "--cpu", "--sampling", "--temperature", "0.7", "--beam", "1",
                   "--nbest", "1", "--max-len-b", "10", "--seed", "1", input="the city of\nin 1990 ,\n")
    hypos = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hypos) == 2
    assert hypos[0][2].startswith("the city of ") and hypos[1][2].startswith("in 1990 , ")
    assert all(len(h[2].split()) > 3 for h in hypos)

    from fairseq.models import BaseFairseqModel  # noqa: F401  (fairseq's registries first)
    from altsg_fairseq.models.qrnn_lm import QRNNLanguageModel

    hub = QRNNLanguageModel.from_pretrained(str(save), "checkpoint_last.pt", str(sample_bin),
                                            user_dir=str(REPO / "altsg_fairseq"))
    torch.manual_seed(0)
    text = hub.sample("the city of", beam=1, sampling=True, temperature=0.8, max_len_b=8)
    assert text.startswith("the city of ") and len(text.split()) > 3
