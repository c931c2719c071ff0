"""The AWD regularisers against their plain definitions."""

import torch
from torch import nn

from altsg_fairseq.modules import embedding_dropout, locked_dropout


def test_embedding_dropout_drops_whole_words_as_a_masked_table_would():
    torch.manual_seed(0)
    embed = nn.Embedding(30, 4).double()
    tokens = torch.randint(30, (5, 7))
    torch.manual_seed(1)
    out = embedding_dropout(embed, tokens, 0.5, True)
    out.pow(2).sum().backward()
    grad = embed.weight.grad.clone()
    embed.weight.grad = None
    torch.manual_seed(1)  # the plain definition: one mask over the table's rows, then the lookup
    keep = embed.weight.new_empty(30, 1).bernoulli_(0.5) / 0.5
    expected = (embed.weight * keep)[tokens]
    expected.pow(2).sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, embed.weight.grad)
    dropped = (keep == 0).squeeze(1)[tokens]
    assert dropped.any() and (out[dropped] == 0).all()  # every occurrence of a dropped word
    assert torch.equal(embedding_dropout(embed, tokens, 0.5, False), embed(tokens))


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(2)
    x = torch.ones(6, 3, 8)
    out = locked_dropout(x, 0.5, True)
    assert torch.equal(out, out[:1].expand_as(out)) and set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, False), x)
