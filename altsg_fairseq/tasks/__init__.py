from .alternating_lm import AlternatingLMTask  # noqa: F401 (registers alternating_lm)
