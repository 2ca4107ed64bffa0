"""What transformers' own model tests ask of a VLM: recorded vision outputs, static cache, compiled decoding.

The common test mixins (ModelTesterMixin, GenerationTesterMixin) are not shipped in the transformers wheel, so each
behaviour they check that Mavors used to fail is proven here against transformers' own references.
"""

import pytest
import torch
from conftest import image_inputs, pack_frames, prompt_ids, randomize_, tokens_for, video_inputs
from transformers import CompileConfig, SiglipVisionConfig, SiglipVisionModel

from transformers_mavors import MavorsForConditionalGeneration, MavorsVisionModel
from transformers_mavors.builders import inflate_siglip_weights

P = 14


@pytest.fixture
def eager_tower(vision_config):
    vision_config._attn_implementation = "eager"  # attention weights exist only in eager attention
    torch.manual_seed(0)
    return randomize_(MavorsVisionModel(vision_config), std=0.1).eval()


def test_vision_tower_records_hidden_states_and_attentions(eager_tower, vision_config):
    rows, grid = video_inputs(3, 4, 6)
    with torch.no_grad():
        plain = eager_tower(rows, grid)
        recorded = eager_tower(rows, grid, output_hidden_states=True, output_attentions=True)
    assert plain.hidden_states is None and plain.attentions is None
    layers, heads, d = (
        vision_config.num_hidden_layers,
        vision_config.num_attention_heads,
        vision_config.hidden_size,
    )
    assert len(recorded.hidden_states) == layers + 1  # embeddings, then every ViT layer
    assert len(recorded.attentions) == layers
    assert all(h.shape == (3, 24, d) for h in recorded.hidden_states)  # (chunks, patches, d_V)
    assert all(a.shape == (3, heads, 24, 24) for a in recorded.attentions)
    assert torch.allclose(recorded.attentions[0].sum(-1), torch.ones(3, heads, 24), atol=1e-5)
    # recording changes nothing of the result
    assert (recorded.last_hidden_state - plain.last_hidden_state).abs().max() <= 1e-5
    # hidden_states[0] is the patch + position embedding of eq. 1 / eq. 7
    with torch.no_grad():  # the mode `recorded` ran in (CPU inference takes the fused patch GEMM)
        embedded = eager_tower.embeddings(rows.view(3, 24, -1), 4, 6)
    assert torch.allclose(recorded.hidden_states[0], embedded, atol=1e-6)


def test_recorded_hidden_states_equal_siglips_for_a_static_chunk(vision_config):
    """A chunk of F identical frames goes through the ViT as SigLIP's image does: every recorded layer agrees."""
    vision_config._attn_implementation = "eager"
    siglip_config = SiglipVisionConfig(
        **{k: getattr(vision_config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")},
        num_attention_heads=vision_config.num_attention_heads,
        image_size=vision_config.image_size,
        patch_size=P,
        vision_use_head=False,
    )
    siglip_config._attn_implementation = "eager"
    torch.manual_seed(0)
    siglip = randomize_(SiglipVisionModel(siglip_config), std=0.05).eval()
    mavors = MavorsVisionModel(vision_config).eval()
    inflate_siglip_weights(mavors, siglip)
    frame = torch.randn(1, 3, 56, 84)
    rows = pack_frames(frame.expand(vision_config.frames_per_chunk, -1, -1, -1), P)
    with torch.no_grad():
        ours = mavors(rows, torch.tensor([[1, 4, 6]]), output_hidden_states=True, output_attentions=True)
        theirs = siglip(
            frame, interpolate_pos_encoding=True, output_hidden_states=True, output_attentions=True
        )
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    pairs = zip(ours.hidden_states + ours.attentions, theirs.hidden_states + theirs.attentions, strict=True)
    for mine, reference in pairs:
        assert (mine - reference).abs().max() <= 1e-5


def test_items_of_different_grids_are_padded_to_the_largest(eager_tower, vision_config):
    rows, grid = image_inputs([(4, 4), (2, 4), (4, 6)])
    with torch.no_grad():
        plain = eager_tower(rows, grid).last_hidden_state
        recorded = eager_tower(rows, grid, output_hidden_states=True, output_attentions=True)
    assert [tuple(h.shape) for h in recorded.hidden_states] == [(3, 24, vision_config.hidden_size)] * 3
    # padded keys get no attention: the 8-patch piece attends within its own 8 patches
    assert recorded.attentions[0][1, :, :8, 8:].abs().max() == 0
    assert (recorded.last_hidden_state - plain).abs().max() <= 1e-5


def test_image_and_video_features_return_the_vision_outputs_when_asked(model, config):
    rows, grid = video_inputs(2, 4, 4)
    i_rows, i_grid = image_inputs([(4, 4)])
    layers = config.vision_config.num_hidden_layers
    with torch.no_grad():
        video = model.get_video_features(rows, grid, output_hidden_states=True, return_dict=True)
        image = model.get_image_features(i_rows, i_grid, output_hidden_states=True, return_dict=True)
        plain = model.get_video_features(rows, grid, return_dict=True)
    assert len(video.hidden_states) == len(image.hidden_states) == layers + 1
    assert video.hidden_states[0].shape == (2, 16, config.vision_config.hidden_size)
    assert image.hidden_states[0].shape == (1, 16, config.vision_config.hidden_size)
    assert plain.hidden_states is None
    assert torch.allclose(torch.cat(video.pooler_output), torch.cat(plain.pooler_output), atol=1e-5)


def _video_request(config, tokenizer):
    rows, grid = video_inputs(2, 4, 4)
    ids = torch.tensor(
        [prompt_ids(config, tokenizer, "Look at", config.video_token_id, tokens_for(grid), "what?")]
    )
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=rows, video_grid_thw=grid
    )


def test_static_cache_generation_equals_dynamic_cache(model, config, tokenizer):
    inputs = _video_request(config, tokenizer)
    with torch.no_grad():
        dynamic = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        static = model.generate(**inputs, max_new_tokens=8, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)


@pytest.mark.slow
def test_compiled_fullgraph_decoding_equals_eager(model, config, tokenizer):
    """`_can_compile_fullgraph = True` holds: generate's compiled decode step (static cache, fullgraph=True,
    inductor; about 40 s to compile on 2 cores) gives the eager greedy tokens."""
    assert MavorsForConditionalGeneration._can_compile_fullgraph
    inputs = _video_request(config, tokenizer)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told otherwise
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        compiled = model.generate(
            **inputs,
            max_new_tokens=8,
            do_sample=False,
            cache_implementation="static",
            compile_config=compile_config,
        )
    assert torch.equal(eager, compiled)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled
