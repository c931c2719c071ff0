from .synthetic_gradient_lm import SyntheticGradientLMCriterion  # noqa: F401 (registers synthetic_gradient_lm)
