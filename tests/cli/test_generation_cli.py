"""fairseq-interactive and the hub interface's sample() on a trained checkpoint."""

import torch

from helpers import PLUGIN, REPO, run_cli


def test_fairseq_interactive_and_the_hub_sample_from_a_trained_model(trained, sample_bin):
    save, _ = trained
    proc = run_cli(
        "fairseq-interactive",
        sample_bin,
        *PLUGIN,
        "--path",
        save / "checkpoint_last.pt",
        "--cpu",
        "--sampling",
        "--temperature",
        "0.7",
        "--beam",
        "1",
        "--nbest",
        "1",
        "--max-len-b",
        "10",
        "--seed",
        "1",
        input="the city of\nin 1990 ,\n",
    )
    hypos = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hypos) == 2
    assert hypos[0][2].startswith("the city of ") and hypos[1][2].startswith("in 1990 , ")
    assert all(len(h[2].split()) > 3 for h in hypos)

    from fairseq.models import BaseFairseqModel  # noqa: F401  (fairseq's registries first)
    from altsg_fairseq.models.qrnn_lm import QRNNLanguageModel

    hub = QRNNLanguageModel.from_pretrained(
        str(save), "checkpoint_last.pt", str(sample_bin), user_dir=str(REPO / "altsg_fairseq")
    )
    torch.manual_seed(0)
    text = hub.sample("the city of", beam=1, sampling=True, temperature=0.8, max_len_b=8)
    assert text.startswith("the city of ") and len(text.split()) > 3


def test_sampling_at_a_low_temperature(trained, sample_bin):
    """The reports' commands: fairseq-interactive at 0.001 and the hub at 1e-3 on a trained checkpoint."""
    save, _ = trained
    proc = run_cli(
        "fairseq-interactive",
        sample_bin,
        *PLUGIN,
        "--path",
        save / "checkpoint_last.pt",
        "--cpu",
        "--sampling",
        "--temperature",
        "0.001",
        "--beam",
        "1",
        "--max-len-b",
        "3",
        input="the\nthe city of\n",
    )
    hypos = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hypos) == 2 and all(float(h[1]) > float("-inf") for h in hypos)

    from fairseq.models import BaseFairseqModel  # noqa: F401  (fairseq's registries first)
    from altsg_fairseq.models.qrnn_lm import QRNNLanguageModel

    hub = QRNNLanguageModel.from_pretrained(
        str(save), "checkpoint_last.pt", str(sample_bin), user_dir=str(REPO / "altsg_fairseq")
    )
    greedy = hub.sample("", beam=1, max_len_b=4)
    assert hub.sample("", sampling=True, temperature=1e-3, beam=1, max_len_b=4).split()  # draws, no error
    torch.manual_seed(0)
    assert hub.sample("", sampling=True, temperature=1e-8, beam=1, max_len_b=4) == greedy
