"""Mavors for Hugging Face Transformers.

Importing this package registers every Mavors class with the Auto API, so `AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText`, `AutoModelForCausalLM`, `AutoProcessor` and friends load saved Mavors
checkpoints.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
)

from .configuration_mavors import MavorsConfig, MavorsVisionConfig, num_visual_tokens
from .modeling_mavors import (
    MavorsForConditionalGeneration,
    MavorsModel,
    MavorsPreTrainedModel,
    MavorsVisionModel,
)

# --- model registration -------------------------------------------------------------------------
AutoConfig.register("mavors_vision", MavorsVisionConfig, exist_ok=True)
AutoConfig.register("mavors", MavorsConfig, exist_ok=True)
AutoModel.register(MavorsVisionConfig, MavorsVisionModel, exist_ok=True)
AutoModel.register(MavorsConfig, MavorsModel, exist_ok=True)
AutoModelForImageTextToText.register(MavorsConfig, MavorsForConditionalGeneration, exist_ok=True)
# TRL's DPOTrainer rebuilds its reference model through AutoModelForCausalLM.
AutoModelForCausalLM.register(MavorsConfig, MavorsForConditionalGeneration, exist_ok=True)
# Saved checkpoints carry their code and an `auto_map`, so `trust_remote_code=True` loads them where this
# package is not installed (e.g. straight from the Hub).
MavorsConfig.register_for_auto_class()
MavorsForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

# --- processor registration (processing issue) --------------------------------------------------
# --- end of processor registration ---------------------------------------------------------------

__version__ = "0.1.0"

__all__ = [
    "MavorsConfig",
    "MavorsVisionConfig",
    "MavorsVisionModel",
    "MavorsModel",
    "MavorsPreTrainedModel",
    "MavorsForConditionalGeneration",
    "num_visual_tokens",
]
