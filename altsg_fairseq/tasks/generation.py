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


class PromptGeneration:
    """The task's side of generation: prompts that start after an end of sentence,
    every temperature > 0, the generator forced through each prompt."""

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        return prompt_dataset(src_tokens, self.source_dictionary)

    def build_generator(self, models, args, **kwargs):
        generator = super().build_generator(models, args, **kwargs)
        if getattr(args, "sampling", False):
            generator.search = ForcedStepSampling(
                self.target_dictionary, getattr(args, "sampling_topk", -1), getattr(args, "sampling_topp", -1.0)
            )
        # fairseq divides the logits by the temperature; below MIN_TEMPERATURE they would overflow,
        # and every such temperature already samples the most likely word (its limit)
        generator.temperature = max(getattr(generator, "temperature", 1.0), MIN_TEMPERATURE)
        return generator

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Continue each prompt: the generator starts from </s> and is forced through the prompt."""
        with torch.no_grad():
            if prefix_tokens is None and sample["net_input"]["src_tokens"].size(1) > 1:
                prefix_tokens = sample["net_input"]["src_tokens"][:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens)


def prompt_dataset(src_tokens, dictionary: Dictionary) -> NestedDictionaryDataset:
    """Prompts (each ending with </s>, as encode_line gives them) as sentences
    that start after an end of sentence, like the lines of the training text:
    the source of each is </s> + prompt, its target the prompt + </s> (what
    the hub interface's score() scores: the line's words and its end)."""
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
            "target": PadDataset(AppendTokenDataset(prompts, eos), pad, left_pad=False),
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
        shift = torch.where(
            forced, lprobs.masked_fill(~finite, float("-inf")).amax(-1, keepdim=True), torch.zeros_like(lprobs[..., :1])
        )
        scores_buf, indices_buf, beams_buf = super().step(
            step, lprobs - shift, scores, prev_output_tokens, original_batch_idxs
        )
        shift = shift.squeeze(-1)  # (B, beam): at step 0 every beam is the first
        scores_buf = scores_buf + torch.gather(shift, 1, beams_buf)
        return scores_buf, indices_buf, beams_buf
