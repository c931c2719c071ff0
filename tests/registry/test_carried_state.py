"""The decoder's carried state: its public interface and its place in checkpoints."""

import pytest
import torch

from helpers import build_from_flags


@pytest.mark.parametrize("rnn_type", ["qrnn", "lstm", "gru"])
def test_carried_state_travels_in_the_model_extra_state(tmp_path, rnn_type):
    """What a checkpoint keeps of the training stream's carried state (h and c
    for an LSTM) comes back, through torch.save/torch.load(weights_only)."""
    flags = ["--rnn-type", rnn_type, "--embed-dim", "6", "--hidden-dim", "7"]
    model = build_from_flags(tmp_path, *flags, num_types=24).model
    model(torch.randint(4, 24, (3, 5)), stream="train")
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = build_from_flags(tmp_path, *flags).model
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    saved, loaded = model.decoder.carried_state_dict("train"), fresh.decoder.carried_state_dict("train")
    assert len(saved) == len(loaded) == 2
    # the per-layer states come back as the layers' own types (QRNNState / RNNState)
    assert [type(s) for s in fresh.decoder._carried["train"]] == [type(s) for s in model.decoder._carried["train"]]
    for a, b in zip(saved, loaded):
        assert len(a) == len(b)
        for s, t in zip(a, b):
            assert (s is None and t is None) or torch.equal(s, t)
    # and the state a resumed run starts from is the one the first run carried
    torch.testing.assert_close(
        fresh.decoder.start_state("train", False, 3), model.decoder.start_state("train", False, 3)
    )
    nxt = torch.randint(4, 24, (3, 4))
    torch.testing.assert_close(fresh.eval()(nxt, stream="train")[0], model.eval()(nxt, stream="train")[0])
