"""Model-core invariants (SPEC §6: 1-4, 6, 7 at model level) on tiny random models."""

import copy

import pytest
import torch
from conftest import image_inputs, pack_frames, prompt_ids, randomize_, tokens_for, video_inputs
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from transformers_mavors import MavorsForConditionalGeneration, MavorsVisionModel
from transformers_mavors._compat import enable_activation_checkpointing

P = 14


def siglip_twin(vision_config, seed: int = 0) -> tuple[SiglipVisionModel, MavorsVisionModel]:
    """A random `SiglipVisionModel` and a `MavorsVisionModel` built from its weights (kernel inflation)."""
    from transformers_mavors.builders import inflate_siglip_weights

    siglip_config = SiglipVisionConfig(
        **{k: getattr(vision_config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")},
        num_attention_heads=vision_config.num_attention_heads,
        image_size=vision_config.image_size,
        patch_size=vision_config.patch_size,
        vision_use_head=False,
    )
    torch.manual_seed(seed)
    siglip = randomize_(SiglipVisionModel(siglip_config), seed=seed, std=0.05).eval()
    mavors = MavorsVisionModel(vision_config).eval()
    inflate_siglip_weights(mavors, siglip)
    return siglip, mavors


def pre_pool(vision: MavorsVisionModel, rows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    hidden = vision.embeddings(rows[None], h, w)
    return vision.post_layernorm(vision.encoder(inputs_embeds=hidden).last_hidden_state)[0]


def pool_2x2(hidden: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return hidden.reshape(h // 2, 2, w // 2, 2, -1).mean(dim=(1, 3)).reshape(-1, hidden.shape[-1])


# ---- invariant 1: SigLIP identity ---------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(56, 56), (56, 84), (112, 56)])
def test_static_chunk_matches_siglip(vision_config, height, width):
    siglip, mavors = siglip_twin(vision_config)
    frame = torch.randn(1, 3, height, width)
    h, w = height // P, width // P
    with torch.no_grad():
        reference = siglip(frame, interpolate_pos_encoding=True).last_hidden_state[0]  # post-LN (h*w, d)
        chunk_rows = pack_frames(frame.expand(vision_config.frames_per_chunk, -1, -1, -1), P)
        image_rows = pack_frames(frame, P)
        static_chunk = pre_pool(mavors, chunk_rows, h, w)
        image = pre_pool(mavors, image_rows, h, w)
    assert (static_chunk - reference).abs().max() <= 1e-5
    assert (image - reference).abs().max() <= 1e-5


def test_pooled_output_without_aggregator_is_pooled_siglip(vision_config):
    vision_config.ifa_num_hidden_layers = 0
    siglip, mavors = siglip_twin(vision_config)
    frame = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        reference = pool_2x2(siglip(frame, interpolate_pos_encoding=True).last_hidden_state[0], 4, 6)
        rows = pack_frames(frame.expand(vision_config.frames_per_chunk, -1, -1, -1), P)
        video_out = mavors(rows, torch.tensor([[1, 4, 6]])).last_hidden_state
        image_out = mavors(pack_frames(frame, P), torch.tensor([[1, 4, 6]])).last_hidden_state
    assert video_out.shape == (6, vision_config.hidden_size)
    assert (video_out - reference).abs().max() <= 1e-5
    assert (image_out - reference).abs().max() <= 1e-5


def test_fresh_aggregator_is_identity(vision_config):
    siglip, mavors = siglip_twin(vision_config)  # aggregator keeps its zero-initialised output projections
    frames = torch.randn(2 * vision_config.frames_per_chunk, 3, 56, 56)
    rows = torch.cat([pack_frames(chunk, P) for chunk in frames.split(vision_config.frames_per_chunk)])
    with torch.no_grad():
        with_ifa = mavors(rows, torch.tensor([[2, 4, 4]])).last_hidden_state
        mavors.config.ifa_num_hidden_layers = 0
        without = mavors(rows, torch.tensor([[2, 4, 4]])).last_hidden_state
    assert torch.equal(with_ifa, without)


def test_image_fast_path_equals_replicated_chunk(vision_config):
    mavors = randomize_(MavorsVisionModel(vision_config), std=0.05).eval()
    frame = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        fast = mavors(pack_frames(frame, P), torch.tensor([[1, 4, 6]])).last_hidden_state
        slow_rows = pack_frames(frame.expand(vision_config.frames_per_chunk, -1, -1, -1), P)
        slow = mavors(slow_rows, torch.tensor([[1, 4, 6]])).last_hidden_state
    assert (fast - slow).abs().max() <= 1e-5


def test_inflated_kernel_is_siglip_kernel_replicated(vision_config):
    siglip, mavors = siglip_twin(vision_config)
    kernel = mavors.embeddings.patch_embedding.weight
    assert kernel.shape[2] == vision_config.frames_per_chunk
    for t in range(vision_config.frames_per_chunk):
        assert torch.equal(kernel[:, :, t], siglip.embeddings.patch_embedding.weight)


# ---- invariant 3: C-RoPE ------------------------------------------------------------------------


@pytest.fixture
def video_tower(vision_config):
    torch.manual_seed(0)
    return randomize_(MavorsVisionModel(vision_config), std=0.1).eval()


def encode(tower, rows, grid, positions):
    with torch.no_grad():
        return tower(rows, grid, torch.tensor(positions)).last_hidden_state


def test_crope_shift_invariance(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    base = encode(video_tower, rows, grid, [0, 1, 2])
    shifted = encode(video_tower, rows, grid, [7, 8, 9])
    assert (base - shifted).abs().max() <= 1e-5


def test_crope_wider_gaps_change_output(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    base = encode(video_tower, rows, grid, [0, 1, 2])
    widened = encode(video_tower, rows, grid, [0, 3, 6])
    assert (base - widened).abs().max() > 1e-3
    # the first chunk only sees itself, so its tokens are unaffected by the other chunks' positions
    assert (base[:4] - widened[:4]).abs().max() <= 1e-5


def test_crope_reordering_chunks_changes_output(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    chunks = rows.view(3, 16, -1)
    reordered = chunks[[2, 0, 1]].reshape(rows.shape)
    base = encode(video_tower, rows, grid, [0, 1, 2]).view(3, 4, -1)
    other = encode(video_tower, reordered, grid, [0, 1, 2]).view(3, 4, -1)
    # not a mere permutation of the same per-chunk outputs
    assert (base[[2, 0, 1]] - other).abs().max() > 1e-3


def test_chunk_output_ignores_later_chunks(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    changed = rows.clone()
    changed[32:] = torch.randn_like(changed[32:])  # third chunk's patches
    base = encode(video_tower, rows, grid, [0, 1, 2])
    other = encode(video_tower, changed, grid, [0, 1, 2])
    assert (base[:8] - other[:8]).abs().max() <= 1e-6  # chunks 1-2 (4 tokens each) unchanged
    assert (base[8:] - other[8:]).abs().max() > 1e-3


def test_token_mode_rope_differs_from_chunk_mode(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    chunk_mode = encode(video_tower, rows, grid, [0, 1, 2])
    video_tower.config.ifa_position_mode = "token"
    token_mode = encode(video_tower, rows, grid, [0, 1, 2])
    assert (chunk_mode - token_mode).abs().max() > 1e-3
    # standard RoPE ignores chunk timestamps: shifting them changes nothing in token mode
    assert torch.equal(token_mode, encode(video_tower, rows, grid, [5, 9, 30]))


def test_image_pieces_are_aggregated_independently(video_tower):
    rows, grid = image_inputs([(4, 4), (4, 6), (4, 4)])
    together = encode(video_tower, rows, grid, [0, 0, 0])
    alone = [
        encode(video_tower, r, g[None], [0]) for r, g in zip(rows.split([16, 24, 16]), grid, strict=False)
    ]
    assert (together - torch.cat(alone)).abs().max() <= 1e-5


def test_micro_batch_size_does_not_change_output(video_tower):
    rows, grid = video_inputs(7, 4, 4)
    reference = encode(video_tower, rows, grid, list(range(7)))
    video_tower.config.vision_chunk_batch_size = 3
    assert (reference - encode(video_tower, rows, grid, list(range(7)))).abs().max() <= 1e-5


def test_token_blocks_without_grad_match_one_pass(model, monkeypatch):
    """Long-video memory: without autograd the IFA MLP and projector run over token blocks, with the same result."""
    import transformers_mavors.modeling_mavors as modeling

    rows, grid = video_inputs(5, 4, 6)  # 5 chunks x 6 tokens = 30 tokens, blocks of 7 leave a remainder
    inputs = dict(pixel_values_videos=rows, video_grid_thw=grid)
    model.eval()
    with torch.enable_grad():
        one_pass = torch.cat(model.model.get_video_features(**inputs).pooler_output).detach()
    vision_config = model.config.vision_config
    monkeypatch.setattr(vision_config, "vision_chunk_batch_size", 1)
    calls = []
    monkeypatch.setattr(
        modeling.MavorsAggregatorMLP,
        "forward",
        lambda self, x: calls.append(x.shape[1]) or self.fc2(self.act(self.fc1(x))),
    )
    with torch.no_grad():  # IFA blocks of one micro-batch's rows: 1 chunk x 24 patches
        per_micro_batch = torch.cat(model.model.get_video_features(**inputs).pooler_output)
    layers = vision_config.ifa_num_hidden_layers
    assert calls == [24, 6] * layers
    calls.clear()
    monkeypatch.setattr(vision_config, "vision_chunk_batch_size", 8)
    monkeypatch.setattr(modeling, "TOKEN_BLOCK", 7)
    with torch.no_grad():
        blocked = torch.cat(model.model.get_video_features(**inputs).pooler_output)
    assert calls == [7, 7, 7, 7, 2] * layers
    for result in (per_micro_batch, blocked):
        assert result.shape == one_pass.shape == (30, model.config.text_config.hidden_size)
        assert (result - one_pass).abs().max() <= 1e-5
    assert one_pass.abs().max() > 1e-3  # the comparison is not between two zero tensors


def test_eager_and_sdpa_agree(model, config, tokenizer):
    rows, grid = video_inputs(3, 4, 6)
    ids = torch.tensor(
        [prompt_ids(config, tokenizer, "Describe", config.video_token_id, tokens_for(grid), "it.")]
    )
    kwargs = dict(input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid)
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(**kwargs).logits
        model.set_attn_implementation("eager")
        assert model.config.vision_config._attn_implementation == "eager"
        eager = model(**kwargs).logits
    assert (sdpa - eager).abs().max() <= 1e-5


def test_rotation_matches_qwen2_rope_in_value_and_gradient():
    """The IFA's lean RoPE rotation (one new tensor) computes what transformers' `apply_rotary_pos_emb` does."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    from transformers_mavors.modeling_mavors import rotary_cos_sin, rotate

    torch.manual_seed(0)
    positions = torch.tensor([[0, 0, 3, 3, 7, 7], [1, 1, 1, 2, 2, 2]])
    cos, sin = rotary_cos_sin(positions, head_dim=8, theta=10000.0, dtype=torch.float32)
    x = torch.randn(2, 3, 6, 8, requires_grad=True)
    weights = torch.randn(2, 3, 6, 8)
    ours = rotate(x, cos, sin)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    reference, _ = apply_rotary_pos_emb(x, x, cos, sin)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-6)
    assert (ours - x).abs().max() > 0.1  # positions other than 0 do rotate


def test_aggregator_sdpa_and_eager_agree_with_gradients():
    """The IFA calls torch's SDPA itself (to free Q/K/V early); in training it matches the eager path and its grads."""
    from transformers_mavors import MavorsVisionConfig
    from transformers_mavors.modeling_mavors import MavorsAggregator

    config = MavorsVisionConfig(
        hidden_size=32, ifa_num_attention_heads=4, ifa_intermediate_size=64, ifa_num_hidden_layers=2
    )
    torch.manual_seed(0)
    aggregator = randomize_(MavorsAggregator(config), seed=0, std=0.1).train()
    hidden = torch.randn(2, 12, 32)
    positions = torch.arange(12).div(4, rounding_mode="floor").expand(2, -1)
    results = {}
    for implementation in ("sdpa", "eager"):
        config._attn_implementation = implementation
        aggregator.zero_grad()
        out = aggregator(hidden, positions)
        out.square().sum().backward()
        results[implementation] = (out.detach(), [p.grad.clone() for p in aggregator.parameters()])
    (sdpa, sdpa_grads), (eager, eager_grads) = results["sdpa"], results["eager"]
    assert (sdpa - eager).abs().max() <= 1e-5
    for a, b in zip(sdpa_grads, eager_grads, strict=True):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())
    assert max(g.abs().max() for g in sdpa_grads) > 1e-3


# ---- invariant 2: text-only logits equal Qwen2 --------------------------------------------------


def test_text_only_logits_match_qwen2(model, config, tokenizer):
    qwen = Qwen2ForCausalLM(Qwen2Config(**config.text_config.to_dict())).eval()
    qwen.model.load_state_dict(model.model.language_model.state_dict())
    qwen.lm_head.load_state_dict(model.lm_head.state_dict())
    ids = torch.tensor([tokenizer("The square moves to the left, then a circle appears.")["input_ids"]])
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = qwen(input_ids=ids).logits
    assert torch.equal(ours, theirs)


# ---- invariant 4: generation --------------------------------------------------------------------


def video_prompt(config, tokenizer, num_chunks=3, seed=0):
    rows, grid = video_inputs(num_chunks, 4, 6, seed=seed)
    ids = prompt_ids(config, tokenizer, "What moves?", config.video_token_id, tokens_for(grid), "Answer:")
    positions = torch.arange(num_chunks) * 2
    return torch.tensor([ids]), rows, grid, positions


def test_kv_cache_generation_equals_recomputation(model, config, tokenizer):
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    media = dict(pixel_values_videos=rows, video_grid_thw=grid, video_chunk_positions=positions)
    generated = model.generate(input_ids=ids, **media, max_new_tokens=8, do_sample=False)
    sequence = ids
    with torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=sequence, **media, use_cache=False).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)
    no_cache = model.generate(input_ids=ids, **media, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(generated, no_cache)


def test_generate_encodes_media_once(model, config, tokenizer):
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    calls = []
    handle = model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    model.generate(
        input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid, max_new_tokens=5, do_sample=False
    )
    handle.remove()
    assert len(calls) == 1


def test_beam_search_first_step_matches_prefill(model, config, tokenizer):
    prompts = [video_prompt(config, tokenizer, num_chunks=n, seed=n) for n in (2, 3)]
    # two samples of different lengths, left padded, each with its own video
    length = max(p[0].shape[1] for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.stack([torch.cat([torch.full((length - p[0].shape[1],), pad), p[0][0]]) for p in prompts])
    mask = (torch.arange(length)[None] >= torch.tensor([[length - p[0].shape[1]] for p in prompts])).long()
    media = dict(
        pixel_values_videos=torch.cat([p[1] for p in prompts]),
        video_grid_thw=torch.cat([p[2] for p in prompts]),
        video_chunk_positions=torch.cat([p[3] for p in prompts]),
    )
    with torch.no_grad():
        logprobs = model(input_ids=ids, attention_mask=mask, **media).logits[:, -1].log_softmax(-1)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        **media,
        num_beams=2,
        num_return_sequences=2,
        max_new_tokens=1,
        length_penalty=0.0,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    top = logprobs.topk(2, dim=-1)
    assert torch.allclose(out.sequences_scores.view(2, 2), top.values, atol=1e-4)
    assert torch.equal(out.sequences[:, -1].view(2, 2), top.indices)


# ---- invariant 5 at model level: batch equals singles -------------------------------------------


def test_left_padded_mixed_batch_equals_singles(model, config, tokenizer):
    v_rows, v_grid = video_inputs(2, 4, 4, seed=1)
    i_rows, i_grid = image_inputs([(4, 4), (2, 4)], seed=2)
    video_ids = prompt_ids(config, tokenizer, "Video:", config.video_token_id, tokens_for(v_grid), "What?")
    image_ids = prompt_ids(
        config, tokenizer, "Image please:", config.image_token_id, tokens_for(i_grid), "Say"
    )
    singles = [
        model.generate(
            input_ids=torch.tensor([video_ids]),
            pixel_values_videos=v_rows,
            video_grid_thw=v_grid,
            max_new_tokens=6,
            do_sample=False,
        )[0, len(video_ids) :],
        model.generate(
            input_ids=torch.tensor([image_ids]),
            pixel_values=i_rows,
            image_grid_thw=i_grid,
            max_new_tokens=6,
            do_sample=False,
        )[0, len(image_ids) :],
    ]
    length = max(len(video_ids), len(image_ids))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (length - len(s)) + s for s in (video_ids, image_ids)])
    mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in (video_ids, image_ids)])
    batch = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=v_rows,
        video_grid_thw=v_grid,
        pixel_values=i_rows,
        image_grid_thw=i_grid,
        max_new_tokens=6,
        do_sample=False,
    )[:, length:]
    assert torch.equal(batch[0], singles[0])
    assert torch.equal(batch[1], singles[1])


# ---- training-relevant behaviour ----------------------------------------------------------------


def test_gradient_checkpointing_gives_same_gradients(model, config, tokenizer):
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    labels = ids.clone()
    labels[ids == config.video_token_id] = -100
    model.train()

    def grads(m):
        m.zero_grad()
        m(
            input_ids=ids,
            pixel_values_videos=rows,
            video_grid_thw=grid,
            video_chunk_positions=positions,
            labels=labels,
        ).loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    reference = grads(model)
    checkpointed = copy.deepcopy(model)
    enable_activation_checkpointing(checkpointed, {"use_reentrant": False})
    assert checkpointed.model.vision_model.encoder.layers[0].gradient_checkpointing
    assert checkpointed.model.vision_model.aggregator.layers[0].gradient_checkpointing
    other = grads(checkpointed)
    assert reference.keys() == other.keys()
    assert "model.vision_model.embeddings.patch_embedding.weight" in reference
    for name in reference:
        assert torch.allclose(reference[name], other[name], atol=1e-5), name


def test_loss_ignores_masked_labels(model, config, tokenizer):
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    labels = torch.full_like(ids, -100)
    labels[0, -3:] = ids[0, -3:]
    out = model(input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid, labels=labels)
    logprobs = out.logits[0, -4:-1].log_softmax(-1)
    expected = -logprobs.gather(-1, ids[0, -3:, None]).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)


# ---- memory -------------------------------------------------------------------------------------


def profiled_peak_bytes(fn) -> int:
    """Peak of live CPU tensor bytes allocated while `fn` runs, from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_chunk_micro_batching_bounds_encoding_memory(vision_config):
    """Encoding 32 chunks at micro-batch 4 may only grow memory by what the kept tokens need.

    Bound: peak(32 chunks) <= peak(8 chunks) + 24 chunks x 16 x (bytes of one chunk's output tokens). The
    factor 16 covers the aggregator's working set, which runs over all kept tokens. The same bound is checked
    to fail without micro-batching, so it measures something.
    """
    vision_config.image_size = 112
    h = w = 8
    tower = MavorsVisionModel(vision_config).eval()
    token_bytes = (h // 2) * (w // 2) * vision_config.hidden_size * 4

    def peak(num_chunks, micro_batch):
        tower.config.vision_chunk_batch_size = micro_batch
        rows, grid = video_inputs(num_chunks, h, w)
        with torch.no_grad():
            return profiled_peak_bytes(lambda: tower(rows, grid))

    bound = peak(8, 4) + 24 * 16 * token_bytes
    assert peak(32, 4) <= bound
    assert peak(32, 32) > bound


# ---- invariant 6: save / load -------------------------------------------------------------------


def test_save_load_through_auto_classes_is_exact(model, config, tokenizer, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    ids, rows, grid, positions = video_prompt(config, tokenizer)
    inputs = dict(
        input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid, video_chunk_positions=positions
    )
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mavors"
    for auto_class in (AutoModelForImageTextToText, AutoModelForCausalLM):
        loaded = auto_class.from_pretrained(tmp_path).eval()
        assert type(loaded) is MavorsForConditionalGeneration
        with torch.no_grad():
            assert torch.equal(loaded(**inputs).logits, expected)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base).__name__ == "MavorsModel"
    assert torch.equal(
        base.vision_model.embeddings.patch_embedding.weight,
        model.model.vision_model.embeddings.patch_embedding.weight,
    )


def test_vision_model_save_load(video_tower, tmp_path):
    from transformers import AutoModel

    rows, grid = video_inputs(2, 4, 4)
    expected = encode(video_tower, rows, grid, [0, 3])
    video_tower.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is MavorsVisionModel
    assert torch.equal(encode(loaded, rows, grid, [0, 3]), expected)


# ---- invariant 7: bad input ---------------------------------------------------------------------


def test_placeholder_count_mismatch_is_value_error(model, config, tokenizer):
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    short = ids[:, torch.arange(ids.shape[1]) != (ids[0] == config.video_token_id).nonzero()[0, 0]]
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=short, pixel_values_videos=rows, video_grid_thw=grid)


def test_frames_per_chunk_mismatch_is_value_error(model, config, tokenizer):
    ids, _, grid, _ = video_prompt(config, tokenizer)
    rows = torch.randn(int(grid.prod()), 3 * 8 * P * P)  # a processor built for F=8
    with pytest.raises(ValueError, match="frames_per_chunk"):
        model(input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid)


@pytest.mark.parametrize(
    "rows,grid,error,match",
    [
        (torch.zeros(12, 588, dtype=torch.long), [[1, 3, 4]], TypeError, "floating"),
        (torch.zeros(12, 588), [[1, 3, 4]], ValueError, "divisible"),
        (torch.zeros(10, 588), [[1, 4, 4]], ValueError, "rows"),
    ],
)
def test_bad_pixel_inputs_raise_typed_errors(video_tower, rows, grid, error, match):
    with pytest.raises(error, match=match):
        video_tower(rows, torch.tensor(grid))


def test_wrong_number_of_chunk_positions(video_tower):
    rows, grid = video_inputs(3, 4, 4)
    with pytest.raises(ValueError, match="chunk positions"):
        video_tower(rows, grid, torch.tensor([0, 1]))


# ---- multi-process safety (the training hooks of transformers_mavors.training.rank_sync) -----------------


@pytest.mark.parametrize("media", ["none", "video", "image"])
def test_training_forward_runs_vision_tower_for_every_modality(model, config, tokenizer, media):
    """Whatever a batch holds, a training forward runs the tower once per modality and reaches every weight."""
    from transformers_mavors.training import synchronize_vision_calls

    ids, rows, grid, _ = video_prompt(config, tokenizer)
    kwargs = {}
    if media == "video":
        kwargs = dict(pixel_values_videos=rows, video_grid_thw=grid)
    elif media == "image":
        i_rows, i_grid = image_inputs([(4, 4)])
        ids = torch.tensor([prompt_ids(config, tokenizer, "Look", config.image_token_id, 4, "ok")])
        kwargs = dict(pixel_values=i_rows, image_grid_thw=i_grid)
    else:
        ids = torch.tensor([tokenizer("Only text here.")["input_ids"]])
    # the reference computes what training computes: transformers' modules, not the fused CPU inference path
    model.config.vision_config.fused_cpu_kernels = False
    with torch.no_grad():
        reference = model.eval()(input_ids=ids, **kwargs).logits
    synchronize_vision_calls(model)
    calls = []
    handle = model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    model.train()
    out = model(input_ids=ids, labels=ids, **kwargs)
    out.loss.backward()
    handle.remove()
    assert len(calls) == 2
    assert torch.allclose(out.logits, reference, atol=1e-6)  # the dummy term adds exactly zero
    assert all(p.grad is not None for p in model.model.vision_model.parameters())
    assert all(p.grad is not None for p in model.model.projector.parameters())


def test_the_model_alone_runs_no_extra_vision_calls(model, config, tokenizer):
    """Rank synchronisation is the trainer's business: without its hooks a training forward encodes only the
    batch's own media (the modeling code holds no distributed logic)."""
    import inspect

    import transformers_mavors.modeling_mavors as modeling

    calls = []
    model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    ids = torch.tensor([tokenizer("Only text here.")["input_ids"]])
    model.train()(input_ids=ids, labels=ids).loss.backward()
    assert calls == []
    assert "torch.distributed" not in inspect.getsource(modeling)
