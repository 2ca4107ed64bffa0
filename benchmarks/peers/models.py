"""The three architectures, full size or with every stack's depth reduced, behind one shared Qwen2 LLM.

`build_models` makes them with the very same language-model weights and LM head; `build_bare_llm` wraps those
weights in a bare `Qwen2ForCausalLM` for the decode comparison.
"""

from __future__ import annotations

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
)

from transformers_mavors import MavorsConfig, MavorsForConditionalGeneration
from transformers_mavors.configuration_mavors import QWEN2_5_7B_TEXT_DEFAULTS

from .config import FRAMES_PER_CHUNK, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, Setup

QWEN2_5_0_5B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": True,
}
TINY_TEXT = {
    **QWEN2_5_0_5B_TEXT,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}
LLMS = {"0.5b": QWEN2_5_0_5B_TEXT, "7b": QWEN2_5_7B_TEXT_DEFAULTS, "tiny": TINY_TEXT}
# SigLIP-so400m-patch14-384: the IVE of Mavors-7B and the ViT VideoLLaMA3 starts from
SIGLIP_SO400M = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}
# Qwen2.5-VL-7B's ViT (its config.json; the class defaults in transformers differ)
QWEN2_5_VL_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "hidden_act": "silu",
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def reduced(full_depth: int, divisor: int) -> int:
    """A stack of `full_depth` layers cut to 1/`divisor` (rounded half up), at least one layer."""
    return max(1, int(full_depth / divisor + 0.5))


def text_config(setup: Setup) -> dict:
    """The one Qwen2 text config every model gets (depth reduced)."""
    config = dict(LLMS[setup.llm])
    config["num_hidden_layers"] = reduced(config["num_hidden_layers"], setup.depth_divisor)
    setup.depths["llm"] = config["num_hidden_layers"]
    return config


def build_mavors(setup: Setup, text: dict) -> MavorsForConditionalGeneration:
    vision = dict(TINY_VISION if setup.tiny else SIGLIP_SO400M)
    vision["num_hidden_layers"] = reduced(vision["num_hidden_layers"], setup.depth_divisor)
    ifa_layers = 1 if setup.tiny else reduced(3, setup.depth_divisor)
    setup.depths["mavors_vit"], setup.depths["mavors_ifa"] = vision["num_hidden_layers"], ifa_layers
    config = MavorsConfig(
        vision_config=dict(
            **vision,
            image_size=56 if setup.tiny else 384,
            patch_size=14,
            frames_per_chunk=FRAMES_PER_CHUNK,
            ifa_num_hidden_layers=ifa_layers,
            ifa_num_attention_heads=vision["num_attention_heads"],
            ifa_intermediate_size=vision["intermediate_size"],
        ),
        text_config=dict(model_type="qwen2", **text),
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
    )
    return MavorsForConditionalGeneration(config)


def build_qwen2_5_vl(setup: Setup, text: dict) -> Qwen2_5_VLForConditionalGeneration:
    vision = dict(QWEN2_5_VL_VISION)
    if setup.tiny:
        vision.update(hidden_size=32, intermediate_size=64, num_heads=2, depth=1)
    depth = reduced(vision["depth"], setup.depth_divisor) if not setup.tiny else 1
    # the full tower has window attention everywhere but the last block of each group of 8; a tower cut to fewer
    # blocks than 8 keeps one full-attention block, its last
    group = 8 if depth >= 8 else depth
    vision["depth"] = depth
    vision["fullatt_block_indexes"] = [i for i in range(depth) if (i + 1) % group == 0]
    vision["out_hidden_size"] = text["hidden_size"]
    setup.depths["qwen2_5_vl_vit"] = depth
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    # M-RoPE splits head_dim/2 rotary frequencies 2:3:3 over (time, height, width), as [16, 24, 24] does at 128
    quarter = head_dim // 8
    mrope = [
        quarter,
        (head_dim // 2 - quarter) // 2,
        head_dim // 2 - quarter - (head_dim // 2 - quarter) // 2,
    ]
    text_kwargs = {k: v for k, v in text.items() if k != "rope_parameters"}
    text_kwargs["rope_parameters"] = {**text["rope_parameters"], "mrope_section": mrope}
    config = Qwen2_5_VLConfig(
        text_config=text_kwargs,
        vision_config=vision,
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_video_llama_3(setup: Setup, text: dict) -> VideoLlama3ForConditionalGeneration:
    vision = dict(TINY_VISION if setup.tiny else SIGLIP_SO400M)
    vision["num_hidden_layers"] = reduced(vision["num_hidden_layers"], setup.depth_divisor)
    setup.depths["video_llama_3_vit"] = vision["num_hidden_layers"]
    config = VideoLlama3Config(
        text_config=dict(model_type="qwen2", **text),
        vision_config=dict(**vision, patch_size=14),
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
    )
    return VideoLlama3ForConditionalGeneration(config)


class LastPositionHead(torch.nn.Module):
    """An LM head applied to the last position only (what `logits_to_keep=1` does in the other two models).

    transformers' VideoLLaMA3 has no `logits_to_keep`: its prefill projects every prompt position onto the
    vocabulary (~5.6 GB of fp32 logits at 64 frames of 448x252). Generation reads the last position only, so
    this changes no generated token, and the comparison is of architectures, not of that omission.
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.head(hidden_states[:, -1:])


def randomize_(model: torch.nn.Module, generator: torch.Generator, done: set) -> None:
    """Random weights, fast: norm weights 1, other vectors 0, matrices N(0, 0.02). Tensors in `done` are skipped."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.data_ptr() in done:
                continue
            done.add(param.data_ptr())
            if param.ndim > 1:
                param.normal_(0.0, 0.02, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def build_models(setup: Setup) -> dict:
    """The three models behind one shared language model: the same Qwen2 weights (and LM head) in each.

    Built without transformers' weight initialisation (three copies of it take longer than the quick benchmark
    may) and filled by `randomize_`; Qwen2.5-VL's text model (Qwen2 layers with M-RoPE) takes the shared tensors
    by `load_state_dict(assign=True)`, VideoLLaMA3 holds the very module.
    """
    from transformers.initialization import no_init_weights

    text = text_config(setup)
    with no_init_weights():
        models = {
            "mavors": build_mavors(setup, text),
            "qwen2_5_vl": build_qwen2_5_vl(setup, text),
            "video_llama_3": build_video_llama_3(setup, text),
        }
    mavors = models["mavors"]
    if text["tie_word_embeddings"]:
        mavors.lm_head.weight = mavors.model.language_model.embed_tokens.weight
    models["video_llama_3"].model.language_model = mavors.model.language_model
    models["video_llama_3"].lm_head = (
        mavors.lm_head if setup.video_llama_3_all_logits else LastPositionHead(mavors.lm_head)
    )
    models["qwen2_5_vl"].model.language_model.load_state_dict(
        mavors.model.language_model.state_dict(), strict=True, assign=True
    )
    models["qwen2_5_vl"].lm_head = mavors.lm_head
    generator, done = torch.Generator().manual_seed(0), set()
    for model in models.values():
        randomize_(model, generator, done)
    return {name: model.to(setup.device, setup.torch_dtype).eval() for name, model in models.items()}


def build_bare_llm(mavors: MavorsForConditionalGeneration) -> Qwen2ForCausalLM:
    """`Qwen2ForCausalLM` holding Mavors' own language model and LM head (shared, not copied)."""
    with torch.device("meta"):
        bare = Qwen2ForCausalLM(Qwen2Config(**mavors.config.text_config.to_dict()))
    bare.model = mavors.model.language_model
    bare.lm_head = mavors.lm_head
    return bare
