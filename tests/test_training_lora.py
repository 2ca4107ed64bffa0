"""LoRA through PEFT: target presets, training, stage freezing on adapters, merge-and-save."""

import pytest
import torch
from test_training_fixtures import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    handmade_batch,
    handmade_collator,
    handmade_dataset,
    one_torch_thread,
    tiny_model,
    training_args,
)

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.training import (
    MavorsTrainer,
    apply_lora,
    lora_target_modules,
    mavors_lora_config,
    merge_and_save,
    parameter_component,
    prepare_stage,
)


@pytest.mark.parametrize(
    "preset,components",
    [
        ("llm", {"llm"}),
        ("llm+projector", {"llm", "projector"}),
        ("all-linear", {"llm", "projector", "ive", "ifa"}),
    ],
)
def test_lora_presets_target_every_linear_of_their_components_and_never_lm_head(preset, components):
    model = tiny_model()
    targets = lora_target_modules(model, preset)
    linears = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name != "lm_head"
    }
    expected = {name for name in linears if parameter_component(name + ".weight") in components}
    assert set(targets) == expected
    assert "lm_head" not in targets
    assert not any("patch_embedding" in name for name in targets)


def test_unknown_lora_preset_names_the_accepted_presets():
    with pytest.raises(ValueError, match="llm\\+projector"):
        lora_target_modules(tiny_model(), "vision")


def test_patch_embedding_is_left_out_unless_asked():
    model = tiny_model()
    assert mavors_lora_config(model, "all-linear").modules_to_save is None
    config = mavors_lora_config(model, "all-linear", include_patch_embedding=True)
    assert list(config.modules_to_save) == ["model.vision_model.embeddings.patch_embedding"]


def _train(model, tmp_path, steps=8, stage=None):
    trainer = MavorsTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=steps, learning_rate=5e-3),
        train_dataset=handmade_dataset(8, kinds=("video", "image", "text")),
        data_collator=handmade_collator,
        stage=stage,
    )
    trainer.train()
    return trainer


def test_lora_trains_adapters_only_and_merge_and_save_reproduces_outputs(tmp_path):
    model = tiny_model()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = apply_lora(model, "llm+projector", r=4, lora_alpha=8, lora_dropout=0.0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    _train(peft_model, tmp_path)
    # base weights untouched, adapters moved (lora_B starts at zero)
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            clean = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
            assert torch.equal(param, base[clean]), name
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)

    batch = handmade_batch([{"kind": "video", "seed": 3}, {"kind": "image", "seed": 4}])
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**batch).logits
        with peft_model.disable_adapter():
            plain = peft_model(**batch).logits
    assert (adapted - plain).abs().max() > 1e-4  # the adapters do something

    merged = merge_and_save(peft_model, tmp_path / "merged")
    reloaded = MavorsForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    assert (tmp_path / "merged" / "model.safetensors").exists()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, adapted, atol=1e-5)
        assert torch.allclose(reloaded(**batch).logits, adapted, atol=1e-5)
    assert not any("lora" in key for key in reloaded.state_dict())


def test_patch_embedding_trains_in_full_when_asked(tmp_path):
    model = tiny_model()
    kernel = model.model.vision_model.embeddings.patch_embedding.weight.detach().clone()
    peft_model = apply_lora(model, "all-linear", r=4, lora_dropout=0.0, include_patch_embedding=True)
    _train(peft_model, tmp_path, steps=3)
    merged = peft_model.merge_and_unload()
    assert not torch.equal(merged.model.vision_model.embeddings.patch_embedding.weight, kernel)


def test_stage_on_a_lora_model_only_freezes(tmp_path):
    peft_model = apply_lora(tiny_model(), "all-linear", r=4)
    prepare_stage(peft_model, "1")  # LLM frozen: its adapters stop training, base weights stay frozen
    for name, param in peft_model.named_parameters():
        component = parameter_component(name)
        expected = "lora_" in name and component in ("ifa", "projector")
        assert param.requires_grad == expected, name
