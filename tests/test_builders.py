"""Building Mavors from SigLIP and Qwen2 checkpoints saved by the tests themselves."""

import pytest
import torch
from conftest import pack_frames, save_qwen
from transformers import (
    AutoTokenizer,
    Qwen2ForCausalLM,
    SiglipModel,
    SiglipVisionModel,
)

from transformers_mavors import MavorsForConditionalGeneration, MavorsVisionModel
from transformers_mavors.testing_utils import build_tiny_tokenizer


def test_vision_from_siglip_matches_siglip(siglip_dir):
    vision = MavorsVisionModel.from_siglip_pretrained(siglip_dir, frames_per_chunk=3, ifa_num_hidden_layers=1)
    assert vision.config.frames_per_chunk == 3 and vision.config.image_size == 56
    siglip = SiglipVisionModel.from_pretrained(siglip_dir).eval()
    frame = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        reference = siglip(frame).last_hidden_state[0]
        reference = reference.reshape(2, 2, 2, 2, -1).mean(dim=(1, 3)).reshape(4, -1)
        ours = vision.eval()(pack_frames(frame.expand(3, -1, -1, -1), 14), torch.tensor([[1, 4, 4]]))
    assert (ours.last_hidden_state - reference).abs().max() <= 1e-5


def test_vision_from_full_siglip_checkpoint(siglip_full_dir):
    vision = MavorsVisionModel.from_siglip_pretrained(siglip_full_dir)
    siglip = SiglipModel.from_pretrained(siglip_full_dir).vision_model
    assert torch.equal(vision.post_layernorm.weight, siglip.post_layernorm.weight)
    assert torch.equal(
        vision.embeddings.patch_embedding.weight[:, :, 5], siglip.embeddings.patch_embedding.weight
    )


def test_model_from_vision_text_pretrained(siglip_dir, qwen_dir):
    model = MavorsForConditionalGeneration.from_vision_text_pretrained(
        siglip_dir, qwen_dir, frames_per_chunk=4, ifa_position_mode="token", projector_hidden_act="gelu_new"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    assert model.config.vision_config.frames_per_chunk == 4
    assert model.config.vision_config.ifa_position_mode == "token"
    assert model.config.projector_hidden_act == "gelu_new"
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    qwen = Qwen2ForCausalLM.from_pretrained(qwen_dir).eval()
    ids = torch.tensor([tokenizer("The square moves left.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, qwen(input_ids=ids).logits)


def test_builder_adds_missing_vision_tokens(siglip_dir, tmp_path):
    from transformers import Qwen2Tokenizer

    full = build_tiny_tokenizer()
    # the same BPE without Qwen's vision tokens
    vocab = {k: v for k, v in full.get_vocab().items() if v < 385}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in full._merges]
    bare = Qwen2Tokenizer(vocab=vocab, merges=merges)
    bare.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    assert "<|video_pad|>" not in bare.get_vocab()
    save_qwen(tmp_path, bare)
    model = MavorsForConditionalGeneration.from_vision_text_pretrained(siglip_dir, tmp_path)
    assert model.config.video_token_id >= len(bare)
    assert model.config.text_config.vocab_size > model.config.video_token_id
    assert model.get_input_embeddings().weight.shape[0] == model.config.text_config.vocab_size


def test_dtype_and_attention_options(siglip_dir, qwen_dir):
    model = MavorsForConditionalGeneration.from_vision_text_pretrained(
        siglip_dir, qwen_dir, dtype="bfloat16", attn_implementation="eager"
    )
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.vision_model.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    assert model.config.vision_config._attn_implementation == "eager"


def test_unknown_override_is_type_error(siglip_dir, qwen_dir):
    with pytest.raises(TypeError, match="frames_per_chunks"):
        MavorsForConditionalGeneration.from_vision_text_pretrained(siglip_dir, qwen_dir, frames_per_chunks=8)
    with pytest.raises(TypeError, match="image_token_id|projector"):
        # MavorsConfig fields are not vision overrides
        MavorsVisionModel.from_siglip_pretrained(siglip_dir, projector_hidden_act="relu")


def test_unknown_dtype_is_value_error(siglip_dir, qwen_dir):
    with pytest.raises(ValueError, match="float17"):
        MavorsForConditionalGeneration.from_vision_text_pretrained(siglip_dir, qwen_dir, dtype="float17")


def test_missing_checkpoint_directory_is_named(tmp_path, qwen_dir):
    with pytest.raises(FileNotFoundError, match="no_such_siglip"):
        MavorsForConditionalGeneration.from_vision_text_pretrained(tmp_path / "no_such_siglip", qwen_dir)


def test_wrong_checkpoint_kind_is_value_error(qwen_dir):
    with pytest.raises(ValueError, match="SigLIP"):
        MavorsVisionModel.from_siglip_pretrained(qwen_dir)
