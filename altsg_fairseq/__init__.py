"""altsg_fairseq: alternating synthetic and real gradients for fairseq.

Use it with ``--user-dir altsg_fairseq``: importing the package registers the
``alternating_lm`` task, the ``qrnn_lm`` model, the ``synthetic_gradient_lm``
criterion and the ``warm_restarts`` lr scheduler. The pure-PyTorch
``altsg_fairseq.modules`` also work where fairseq is not installed.
"""

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # modules/ alone (e.g. a GPU check without fairseq)
    pass
else:
    from .flags import refuse_hydra_train

    refuse_hydra_train()
    from . import criterions, fairseq_patches, models, optim, tasks  # noqa: F401

    fairseq_patches.install()
