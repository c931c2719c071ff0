"""altsg_fairseq: alternating synthetic and real gradients for fairseq.

Use it with ``--user-dir altsg_fairseq``: importing the package registers the
``alternating_lm`` task, the ``qrnn_lm`` model and the
``synthetic_gradient_lm`` criterion.
"""

from . import criterions, models, tasks  # noqa: F401

__version__ = "0.1.0"
