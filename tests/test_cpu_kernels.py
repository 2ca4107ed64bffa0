"""The fused CPU inference path of the vision tower (`fused_cpu_kernels`, `transformers_mavors.cpu_kernels`)."""

import pytest
import torch
from conftest import image_inputs, prompt_ids, randomize_, tokens_for, video_inputs
from torch.profiler import profile

from transformers_mavors import MavorsVisionConfig, MavorsVisionModel, cpu_kernels
from transformers_mavors.tiny import tiny_vision_config

pytestmark = pytest.mark.skipif(not cpu_kernels.onednn_available(), reason="torch built without oneDNN")


def tower(**overrides) -> MavorsVisionModel:
    torch.manual_seed(0)
    return randomize_(MavorsVisionModel(tiny_vision_config(**overrides)), std=0.1).eval()


def encode(model: MavorsVisionModel, fused: bool, inputs) -> torch.Tensor:
    model.config.fused_cpu_kernels = fused
    return model(*inputs).last_hidden_state


def ran_ops(model: MavorsVisionModel, inputs) -> set[str]:
    with profile() as prof:
        model(*inputs)
    return {event.key for event in prof.key_averages()}


def mixed_inputs():
    """A video of 5 chunks (two ViT micro-batches of 4 and 1) and two image pieces of different grids."""
    video, video_grid = video_inputs(5, 4, 6)
    images, image_grid = image_inputs([(4, 4), (2, 6)])
    return (video, video_grid), (images, image_grid)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fused_tower_matches_the_unfused_modules(attention):
    """Videos and images, ViT and IFA: the oneDNN path gives transformers' modules' result to fp32 rounding."""
    model = tower()
    model.config._attn_implementation = attention
    for inputs in mixed_inputs():
        with torch.inference_mode():
            reference = encode(model, False, inputs)
            fused = encode(model, True, inputs)
            ops = ran_ops(model, inputs)
        assert (
            "mkldnn::_linear_pointwise" in ops and "aten::addmm" not in ops
        )  # every GEMM went through oneDNN
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
        assert reference.abs().max() > 0.1  # a real signal, not near-zero outputs


def test_switch_off_runs_transformers_modules():
    model = tower()
    model.config.fused_cpu_kernels = False
    with torch.no_grad():
        ops = ran_ops(model, mixed_inputs()[0])
    assert "mkldnn::_linear_pointwise" not in ops and "aten::addmm" in ops


def test_training_forward_is_unfused_and_back_propagates():
    """With autograd on, the switch changes nothing: the same tensors bit for bit, and gradients reach the ViT."""
    model = tower()
    inputs = mixed_inputs()[0]
    unfused = encode(model, False, inputs)
    with_switch = encode(model, True, inputs)
    assert torch.equal(unfused, with_switch)
    with_switch.square().sum().backward()
    assert model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_peft_adapter_takes_the_unfused_path():
    """A LoRA-wrapped projection is not an `nn.Linear`: the fused path must not drop the adapter's delta."""
    peft = pytest.importorskip("peft")
    model = tower()
    inputs = mixed_inputs()[0]
    with torch.no_grad():
        base = encode(model, False, inputs)
    adapted = peft.get_peft_model(
        model, peft.LoraConfig(r=4, target_modules=["q_proj", "fc1"], init_lora_weights=False)
    )
    with torch.no_grad():
        reference = encode(adapted.base_model.model, False, inputs)
        fused = encode(adapted.base_model.model, True, inputs)
    assert (reference - base).abs().max() > 1e-3  # the adapter changes the output
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_a_hooked_layer_still_sees_its_call():
    """Forward hooks (output capture, accelerate, user probes) keep the layer's own forward running."""
    model = tower()
    seen = []
    model.encoder.layers[1].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    with torch.no_grad():
        encode(model, True, mixed_inputs()[0])
    assert seen == [torch.Size([4, 24, 32]), torch.Size([1, 24, 32])]  # two micro-batches of a 4x6 grid


def test_unfusable_activation_runs_after_the_gemm():
    """An activation oneDNN has no post-op for here (SiLU) is applied after the GEMM, same result."""
    model = tower(hidden_act="silu")
    inputs = mixed_inputs()[0]
    with torch.no_grad():
        torch.testing.assert_close(
            encode(model, True, inputs), encode(model, False, inputs), rtol=1e-5, atol=1e-5
        )


def test_bfloat16_fused_path_stays_close():
    model = tower().to(torch.bfloat16)
    video, grid = mixed_inputs()[0]
    inputs = (video.to(torch.bfloat16), grid)
    with torch.no_grad():
        reference = encode(model, False, inputs).float()
        fused = encode(model, True, inputs).float()
    # bf16 keeps 8 bits of mantissa: both paths round differently, within a few bf16 steps of each other
    assert (fused - reference).abs().max() <= 0.05 * reference.abs().max()


def test_switch_is_saved_and_old_configs_default_to_on(tmp_path):
    config = tiny_vision_config(fused_cpu_kernels=False)
    config.save_pretrained(tmp_path)
    assert MavorsVisionConfig.from_pretrained(tmp_path).fused_cpu_kernels is False
    saved = config.to_dict()
    del saved["fused_cpu_kernels"]  # a checkpoint written before the switch existed
    assert MavorsVisionConfig(**{k: v for k, v in saved.items() if k != "model_type"}).fused_cpu_kernels


def test_generate_gives_the_same_answer_with_and_without_the_fused_path(model, config, tokenizer):
    """`generate` on a video: the same greedy tokens, and every step's scores within 1e-4, switch on or off."""
    rows, grid = video_inputs(3, 4, 6)
    ids = prompt_ids(config, tokenizer, "What moves?", config.video_token_id, tokens_for(grid), "Answer:")
    runs = {}
    for fused in (False, True):
        model.config.vision_config.fused_cpu_kernels = fused
        runs[fused] = model.generate(
            input_ids=torch.tensor([ids]),
            pixel_values_videos=rows,
            video_grid_thw=grid,
            max_new_tokens=8,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    assert torch.equal(runs[True].sequences, runs[False].sequences)
    for fused_step, unfused_step in zip(runs[True].scores, runs[False].scores, strict=True):
        torch.testing.assert_close(fused_step, unfused_step, rtol=1e-4, atol=1e-4)


def test_a_global_module_hook_keeps_every_module_call():
    """`register_module_forward_hook` (used by profilers and tracers) sees the SigLIP layers run as modules."""
    model = tower()
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(type(module).__name__)
    )
    try:
        with torch.no_grad():
            encode(model, True, mixed_inputs()[0])
    finally:
        handle.remove()
    assert seen.count("SiglipEncoderLayer") == 4  # 2 layers x 2 micro-batches


def test_trainers_run_unfused_so_no_grad_reference_equals_the_training_forward():
    """Inside `unfused_cpu_kernels()` (the trainers' `train()`), a no-grad forward equals the grad forward."""
    model = tower()
    inputs = mixed_inputs()[0]
    training = encode(model, True, inputs)
    with cpu_kernels.unfused_cpu_kernels(), torch.no_grad():
        reference = encode(model, True, inputs)
        ops = ran_ops(model, inputs)
    assert torch.equal(reference, training)
    assert "mkldnn::_linear_pointwise" not in ops
    with torch.no_grad():
        assert not torch.equal(encode(model, True, inputs), training)  # outside it, the fused path runs
