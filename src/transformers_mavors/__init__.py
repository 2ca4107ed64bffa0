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

# --- pipeline task -------------------------------------------------------------------------------
from .pipelines import VideoTextToTextPipeline, register_pipeline  # noqa: E402

register_pipeline()

# --- processor registration (processing issue) --------------------------------------------------
from transformers import AutoImageProcessor, AutoProcessor  # noqa: E402

# `transformers.AutoVideoProcessor` is a placeholder without torchvision; the real class lives here.
from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # noqa: E402

from .image_processing_mavors import MavorsImageProcessor  # noqa: E402
from .processing_mavors import MavorsProcessor  # noqa: E402
from .video_processing_mavors import MavorsVideoMetadata, MavorsVideoProcessor  # noqa: E402

AutoImageProcessor.register(
    MavorsConfig, image_processor_classes={"pil": MavorsImageProcessor}, exist_ok=True
)
# AutoVideoProcessor asks for the "torchvision" backend by default; ours needs no torchvision and answers both.
AutoVideoProcessor.register(
    MavorsConfig,
    video_processor_classes={"torchvision": MavorsVideoProcessor, "pil": MavorsVideoProcessor},
    exist_ok=True,
)
AutoProcessor.register(MavorsConfig, MavorsProcessor, exist_ok=True)
MavorsProcessor.register_for_auto_class()
MavorsImageProcessor.register_for_auto_class("AutoImageProcessor")
MavorsVideoProcessor.register_for_auto_class("AutoVideoProcessor")
# --- end of processor registration ---------------------------------------------------------------

from .live import MavorsVideoSession  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MavorsConfig",
    "MavorsVisionConfig",
    "MavorsVisionModel",
    "MavorsModel",
    "MavorsPreTrainedModel",
    "MavorsForConditionalGeneration",
    "num_visual_tokens",
    "MavorsImageProcessor",
    "MavorsVideoProcessor",
    "MavorsVideoMetadata",
    "MavorsProcessor",
    "VideoTextToTextPipeline",
    "MavorsVideoSession",
]
