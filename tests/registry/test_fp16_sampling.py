"""Sampling from a float16 model at a low temperature (fairseq-interactive --fp16
--sampling --temperature T): fairseq's generator divides the decoder's output in
place by T (``decoder_out[0][:, -1:, :].div_(temperature)``), so float16 logits
above 65504 * T become inf and the log-softmax NaN."""

import math

from test_generation import PROMPTS, build, generate


def test_half_model_samples_at_a_low_temperature(tmp_path):
    task, model = build(tmp_path, "qrnn")
    model.half()
    hypos = generate(task, model, PROMPTS, sampling=True, temperature=1e-6, beam=1, nbest=1)
    assert all(math.isfinite(float(h[0]["score"])) for h in hypos)
