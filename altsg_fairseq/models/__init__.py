from .qrnn_lm import QRNNLanguageModel  # noqa: F401 (registers qrnn_lm)
