from .adam_l2 import AdamL2  # noqa: F401 (registers adam_l2)
from .warm_restarts import WarmRestartsSchedule  # noqa: F401 (registers warm_restarts)
from .nt_asgd import FairseqNTASGD  # noqa: F401 (registers nt_asgd)
