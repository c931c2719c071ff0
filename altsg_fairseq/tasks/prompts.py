"""Prompts for generation (fairseq-interactive, the hub interface's sample())."""

import torch
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
