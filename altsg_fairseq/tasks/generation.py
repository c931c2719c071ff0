"""Generation (fairseq-interactive, the hub interface's sample()): the prompts, and sampling at any temperature."""

import torch
from fairseq import search
from fairseq.data import (
    AppendTokenDataset,
    Dictionary,
    IdDataset,
    ListDataset,
    NestedDictionaryDataset,
    NumelDataset,
    PadDataset,
    PrependTokenDataset,
)

MIN_TEMPERATURE = 1e-30  # logits / 1e-30 stay finite in float32 while any gap between them is decisive


def prompt_dataset(src_tokens, dictionary: Dictionary) -> NestedDictionaryDataset:
    """Prompts (each ending with </s>, as encode_line gives them) as sentences
    that start after an end of sentence, like the lines of the training text:
    the source of each is </s> + prompt, its target the prompt + <pad>."""
    eos, pad = dictionary.eos(), dictionary.pad()
    prompts = [t[:-1] if len(t) and t[-1] == eos else t for t in src_tokens]
    sizes = torch.tensor([len(p) for p in prompts]).numpy()
    prompts = ListDataset(prompts, sizes)
    source = PrependTokenDataset(prompts, eos)
    return NestedDictionaryDataset(
        {
            "id": IdDataset(),
            "net_input": {
                "src_tokens": PadDataset(source, pad, left_pad=False),
                "src_lengths": NumelDataset(source, reduce=False),
            },
            "target": PadDataset(AppendTokenDataset(prompts, pad), pad, left_pad=False),
        },
        sizes=[sizes + 1],
    )


class ForcedStepSampling(search.Sampling):
    """fairseq's sampling search, where a step that allows one token only (a prompt
    token, or the </s> forced at the length limit) draws that token.

    fairseq samples from exp(log-probabilities). At such a step every other token
    is at -inf, and at a low temperature the allowed token's own log-probability
    underflows to a probability of 0 (at 0.01 a word 5 nats less likely than the
    best one: exp(-500)), so the draw fails. The step's row is shifted by its
    maximum before the draw and the shift is added back to the score, which
    keeps the token's true log-probability.
    """

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        finite = torch.isfinite(lprobs)
        forced = finite.sum(-1, keepdim=True) == 1  # (B, beam, 1)
        shift = torch.where(forced, lprobs.masked_fill(~finite, float("-inf")).amax(-1, keepdim=True),
                            torch.zeros_like(lprobs[..., :1]))
        scores_buf, indices_buf, beams_buf = super().step(step, lprobs - shift, scores, prev_output_tokens,
                                                          original_batch_idxs)
        shift = shift.squeeze(-1)  # (B, beam): at step 0 every beam is the first
        scores_buf = scores_buf + torch.gather(shift, 1, beams_buf)
        return scores_buf, indices_buf, beams_buf
