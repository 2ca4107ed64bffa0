"""Moved to `transformers_mavors.evaluation.niah`; this module re-exports its public names so old imports work."""

from ..evaluation.niah import *  # noqa: F403
from ..evaluation.niah import __all__  # noqa: F401
