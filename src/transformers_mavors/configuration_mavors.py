"""Configurations of Mavors: the vision tower (IVE + IFA) and the full vision-language model."""

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from transformers_mavors_planning.sampling import num_visual_tokens

from ._compat import HAS_SUB_CONFIG_SPEC, SubConfigSpec, build_sub_configs

# Qwen2.5-7B, the language model of Mavors-7B (SPEC §2).
QWEN2_5_7B_TEXT_DEFAULTS = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": False,
}

IFA_POSITION_MODES = ("chunk", "token")

# Qwen2.5's vision special tokens, in the order Qwen's vocabulary lists them. Builders that start from a
# tokenizer lacking them add them in this order, so the model and the processor agree on the ids.
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_SPECIAL_TOKENS = (VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN)


def add_vision_special_tokens(tokenizer) -> int:
    """Add the missing entries of `VISION_SPECIAL_TOKENS` to `tokenizer` (in place); returns how many were added."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in VISION_SPECIAL_TOKENS if token not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return len(missing)


def check_token_compression_threshold(value, name: str = "token_compression_threshold") -> float | None:
    """Validate a token-compression threshold (paper §5.4); returns it as a float, or `None` (compression off).

    A threshold is a cosine similarity: tokens merge when their similarity is strictly above it. Any number
    >= 0 is accepted; above 1 nothing can merge (cosine similarity is at most 1), which equals no compression.
    Non-numbers are a `TypeError`, NaN and negative values a `ValueError`.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 0 or None, got {type(value).__name__} {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"{name} must be a cosine-similarity threshold >= 0 (typically 0.7-0.99; above 1 merges nothing) "
            f"or None to switch compression off, got {value}"
        )
    return float(value)


@strict
class MavorsVisionConfig(PreTrainedConfig):
    r"""
    Configuration of [`MavorsVisionModel`]: the Intra-chunk Vision Encoder (a SigLIP ViT whose patch embedding
    is a 3D convolution over `frames_per_chunk` frames) and the Inter-chunk Feature Aggregator (a small causal
    transformer with chunk-level rotary positions, C-RoPE). The defaults are Mavors-7B's
    (SigLIP-so400m-patch14-384, 16-frame chunks, 3 IFA layers).

    Field names up to `attention_dropout` follow `SiglipVisionConfig`, so a SigLIP config maps onto this one.

    Args:
        frames_per_chunk (`int`, *optional*, defaults to 16):
            F, the number of consecutive frames a chunk holds and the temporal kernel/stride of the 3D patch
            embedding.
        spatial_merge_size (`int`, *optional*, defaults to 2):
            Side of the average pooling window applied to each chunk's patch grid (2x2 in the paper).
        ifa_num_hidden_layers (`int`, *optional*, defaults to 3):
            L_inter, the number of causal transformer layers of the aggregator. 0 disables the aggregator.
        ifa_num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads of each aggregator layer.
        ifa_intermediate_size (`int`, *optional*, defaults to 4304):
            MLP width of each aggregator layer.
        ifa_rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the aggregator's rotary embedding.
        ifa_position_mode (`str`, *optional*, defaults to `"chunk"`):
            `"chunk"` gives every token of a chunk its chunk's timestamp position (C-RoPE, eq. 4); `"token"`
            gives each token its index in the concatenated sequence (standard RoPE, the paper's ablation).
        vision_chunk_batch_size (`int`, *optional*, defaults to 16):
            How many chunks (or image pieces) the ViT encodes at once. Bounds activation memory on long videos.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation used to initialise the aggregator's linear layers.
        token_compression_threshold (`float`, *optional*):
            Token compression before the aggregator (paper §5.4): a video token whose cosine similarity to the token
            at the same index of the previous chunk exceeds this threshold is merged into it (averaged; the earlier
            chunk's position id is kept). `None` (default) switches compression off; above 1 nothing merges. With
            compression on, a video yields fewer tokens than the processor's default placeholder count: build the
            prompt with the counts the model reports (see `docs/usage.md`, "Token compression").
        fused_cpu_kernels (`bool`, *optional*, defaults to `True`):
            In CPU inference (no gradient recorded), run the vision tower's GEMMs through oneDNN with the bias,
            GELU and residual adds fused into them (`transformers_mavors.cpu_kernels`). Results agree with the
            unfused modules to fp32 rounding; training, other devices and adapted or quantized layers always take
            the unfused modules. `False` runs transformers' modules everywhere.
    """

    model_type = "mavors_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 384
    patch_size: int = 14
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    frames_per_chunk: int = 16
    spatial_merge_size: int = 2
    ifa_num_hidden_layers: int = 3
    ifa_num_attention_heads: int = 16
    ifa_intermediate_size: int = 4304
    ifa_rope_theta: float | int = 10000.0
    ifa_position_mode: str = "chunk"
    vision_chunk_batch_size: int = 16
    initializer_range: float = 0.02
    token_compression_threshold: float | int | None = None
    fused_cpu_kernels: bool = True

    def __post_init__(self, **kwargs):
        # Configs saved before 0.2 hold `sync_vision_calls`; rank synchronisation is now the training hooks' job
        # (`transformers_mavors.training.synchronize_vision_calls`), which detect sharded weights themselves.
        kwargs.pop("sync_vision_calls", None)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: reject sizes the model cannot be built with."""
        for name in (
            "frames_per_chunk",
            "spatial_merge_size",
            "patch_size",
            "image_size",
            "vision_chunk_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ifa_num_hidden_layers < 0:
            raise ValueError(f"ifa_num_hidden_layers must be >= 0, got {self.ifa_num_hidden_layers}")
        check_token_compression_threshold(self.token_compression_threshold)
        if self.ifa_position_mode not in IFA_POSITION_MODES:
            raise ValueError(
                f"ifa_position_mode must be one of {IFA_POSITION_MODES}, got {self.ifa_position_mode!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.ifa_num_hidden_layers and (self.hidden_size // self.ifa_num_attention_heads) % 2:
            raise ValueError(
                f"the aggregator's head dim hidden_size/ifa_num_attention_heads = "
                f"{self.hidden_size}/{self.ifa_num_attention_heads} must be an even integer for rotary embeddings"
            )
        if self.ifa_num_hidden_layers and self.hidden_size % self.ifa_num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by ifa_num_attention_heads "
                f"({self.ifa_num_attention_heads})"
            )


@strict
class MavorsConfig(PreTrainedConfig):
    r"""
    Configuration of [`MavorsModel`] / [`MavorsForConditionalGeneration`].

    Args:
        vision_config (`MavorsVisionConfig` or `dict`, *optional*):
            The vision tower (IVE + IFA). Defaults to Mavors-7B's.
        text_config (`Qwen2Config` or `dict`, *optional*):
            The language model, a Qwen2 architecture. Defaults to Qwen2.5-7B's sizes.
        image_token_id (`int`, *optional*, defaults to 151655):
            Id of `<|image_pad|>`, the placeholder replaced by image features.
        video_token_id (`int`, *optional*, defaults to 151656):
            Id of `<|video_pad|>`, the placeholder replaced by video features.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the two linear layers of the MLP projector.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the LM head shares the input embedding matrix.
    """

    model_type = "mavors"
    if HAS_SUB_CONFIG_SPEC:
        sub_configs_defaults = {
            "text_config": SubConfigSpec(
                config_class=AutoConfig, model_type="qwen2", init_kwargs=QWEN2_5_7B_TEXT_DEFAULTS
            ),
            "vision_config": MavorsVisionConfig,
        }
    else:  # transformers 5.19 (_compat.py): a plain mapping, materialised in __post_init__
        sub_configs = {"text_config": AutoConfig, "vision_config": MavorsVisionConfig}
    keys_to_ignore_at_inference = ["past_key_values"]

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 151655
    video_token_id: int = 151656
    projector_hidden_act: str = "gelu"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if not HAS_SUB_CONFIG_SPEC:
            build_sub_configs(self, MavorsVisionConfig, "qwen2", QWEN2_5_7B_TEXT_DEFAULTS)
        super().__post_init__(**kwargs)
        # Qwen2 checkpoints record weight tying on the text config; honour it at the top level too.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


__all__ = [
    "MavorsVisionConfig",
    "MavorsConfig",
    "num_visual_tokens",
    "check_token_compression_threshold",
    "add_vision_special_tokens",
    "VISION_SPECIAL_TOKENS",
    "VISION_START",
    "VISION_END",
    "IMAGE_TOKEN",
    "VIDEO_TOKEN",
]
