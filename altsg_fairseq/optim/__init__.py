from .warm_restarts import WarmRestartsSchedule  # noqa: F401 (registers warm_restarts)
