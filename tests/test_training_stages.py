"""Stages (SPEC §4): freezing, learning-rate groups, schedules, the Trainer integration and resuming."""

import math

import pytest
import torch
from test_training_fixtures import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    handmade_batch,
    handmade_collator,
    handmade_dataset,
    one_torch_thread,
    tiny_model,
    tiny_processor,
    training_args,
)

from transformers_mavors.training import (
    MavorsTrainer,
    mavors_parameter_groups,
    parameter_component,
    prepare_stage,
    stage_lr_scheduler,
)

TABLE = {
    "1": {"ifa", "projector"},
    "1.5": {"ive", "ifa", "projector"},
    "2": {"ive", "ifa", "projector", "llm"},
    "dpo": {"ive", "ifa", "projector", "llm"},
}


def test_components_are_named_after_the_module_tree():
    model = tiny_model()
    expected = {
        "model.vision_model.embeddings.patch_embedding.weight": "ive",
        "model.vision_model.encoder.layers.0.mlp.fc1.weight": "ive",
        "model.vision_model.post_layernorm.bias": "ive",
        "model.vision_model.aggregator.layers.1.self_attn.q_proj.weight": "ifa",
        "model.projector.linear_2.bias": "projector",
        "model.language_model.embed_tokens.weight": "llm",
        "lm_head.weight": "llm",
        # wrapper prefixes and adapter suffixes do not change the component
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight": "llm",
        "module._fsdp_wrapped_module.model.vision_model.aggregator.layers.0.mlp.fc2.weight": "ifa",
    }
    for name, component in expected.items():
        assert parameter_component(name) == component, name
    names = [name for name, _ in model.named_parameters()]
    assert {parameter_component(n) for n in names} == {"ive", "ifa", "projector", "llm"}
    with pytest.raises(ValueError, match="vision_model"):
        parameter_component("classifier.weight")


@pytest.mark.parametrize("stage", ["1", "1.5", "2", "dpo"])
def test_stage_trains_exactly_the_table_components(stage):
    model = tiny_model()
    for param in model.parameters():  # start from the opposite of what the stage wants where possible
        param.requires_grad_(False)
    prepare_stage(model, stage)
    for name, param in model.named_parameters():
        assert param.requires_grad == (parameter_component(name) in TABLE[stage]), name


@pytest.mark.parametrize("stage,value", [("3", "dpo"), (1.5, "1.5"), (2, "2"), ("DPO", "dpo")])
def test_stage_aliases(stage, value):
    model_a, model_b = tiny_model(), tiny_model()
    prepare_stage(model_a, stage)
    prepare_stage(model_b, value)
    assert [p.requires_grad for p in model_a.parameters()] == [p.requires_grad for p in model_b.parameters()]


@pytest.mark.parametrize("stage,error", [("4", ValueError), ("stage2", ValueError), (None, TypeError)])
def test_unknown_stage_error_names_the_accepted_stages(stage, error):
    with pytest.raises(error, match=r"1\.5.*dpo"):
        prepare_stage(tiny_model(), stage)


@pytest.mark.parametrize("stage", ["1", "1.5", "2"])
def test_parameter_groups_give_vision_one_tenth_and_no_decay_to_norms_and_biases(stage):
    model = tiny_model()
    groups = prepare_stage(model, stage, learning_rate=1e-5, weight_decay=0.05)
    by_name = {group["name"]: group for group in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # every trainable tensor exactly once, nothing frozen
    for group in groups:
        vision = group["name"].startswith("vision")
        assert group["lr"] == pytest.approx(1e-6 if vision else 1e-5)
        assert group["weight_decay"] == (0.0 if group["name"].endswith("no_decay") else 0.05)
        for param in group["params"]:
            name = names[id(param)]
            assert (parameter_component(name) in ("ive", "ifa")) == vision, name
            is_norm_or_bias = param.ndim == 1
            assert is_norm_or_bias == group["name"].endswith("no_decay"), name
    assert ("language" in by_name) and ("vision" in by_name)
    if stage == "1":  # the LLM is frozen: only the projector is on the language side
        assert all("projector" in names[id(p)] for p in by_name["language"]["params"])


def test_parameter_groups_read_the_full_shape_of_zero3_shards():
    """A ZeRO-3 (`zero.Init`) parameter is a 1-D shard with its full shape in `ds_shape`: grouped by that shape."""
    model = tiny_model()
    expected = {g["name"]: len(g["params"]) for g in mavors_parameter_groups(model, 1e-5, 0.05)}
    for param in model.parameters():
        param.ds_shape = param.shape
        param.data = param.data.flatten()[:1].clone()  # what this rank holds between steps
    assert {g["name"]: len(g["params"]) for g in mavors_parameter_groups(model, 1e-5, 0.05)} == expected
    assert expected["language"] > 0 and expected["vision"] > 0


def test_parameter_groups_reject_bad_rates():
    with pytest.raises(ValueError, match="learning_rate"):
        mavors_parameter_groups(tiny_model(), learning_rate=0.0)
    for bad in (0.0, -0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="vision_lr_scale"):
            mavors_parameter_groups(tiny_model(), vision_lr_scale=bad)
    groups = mavors_parameter_groups(tiny_model(), learning_rate=1e-4, vision_lr_scale=3.0)
    assert {group["name"]: group["lr"] for group in groups}["vision"] == pytest.approx(3e-4)


@pytest.mark.parametrize("stage", ["1", "1.5"])
def test_frozen_parameters_stay_bit_identical_after_training_steps(tmp_path, stage):
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MavorsTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=3),
        train_dataset=handmade_dataset(6, kinds=("video", "image")),
        data_collator=handmade_collator,
        stage=stage,
    )
    trainer.train()
    changed_components = set()
    for name, param in model.named_parameters():
        component = parameter_component(name)
        if component in TABLE[stage]:
            if not torch.equal(param, before[name]):
                changed_components.add(component)
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"
    assert changed_components == TABLE[stage]


@pytest.mark.parametrize(
    "stage,expected_name,end_ratio", [("1", "constant", 1.0), ("1.5", "constant", 1.0), ("2", "cosine", 0.1)]
)
def test_trainer_uses_stage_groups_and_schedule(tmp_path, stage, expected_name, end_ratio):
    model = tiny_model()
    trainer = MavorsTrainer(
        model=model,
        args=training_args(tmp_path, learning_rate=1e-5, lr_scheduler_type="linear"),
        train_dataset=handmade_dataset(4),
        data_collator=handmade_collator,
        stage=stage,
    )
    steps = 20
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    start = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert start["language"] == pytest.approx(1e-5)
    assert start["vision"] == pytest.approx(1e-6)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
    for name, lr in lrs[-1].items():
        assert lr == pytest.approx(start[name] * end_ratio, rel=1e-6), name
    middle = lrs[steps // 2 - 1]["language"] / start["language"]
    if expected_name == "cosine":  # halfway down a cosine from 1 to 0.1 sits at 0.55
        assert middle == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=0.05)
    assert stage_lr_scheduler(stage)[0].startswith(expected_name)


def test_stage_schedules_add_warmup():
    assert stage_lr_scheduler("1", num_warmup_steps=10) == ("constant_with_warmup", {})
    assert stage_lr_scheduler("dpo") == ("cosine_with_min_lr", {"min_lr_rate": 0.1})


def test_trainer_without_stage_keeps_requires_grad_and_args_schedule(tmp_path):
    model = tiny_model()
    prepare_stage(model, "1")
    trainer = MavorsTrainer(
        model=model,
        args=training_args(tmp_path, lr_scheduler_type="linear"),
        train_dataset=handmade_dataset(4),
        data_collator=handmade_collator,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    assert not model.lm_head.weight.requires_grad
    for _ in range(4):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0  # linear decays to zero


def test_training_loss_decreases_on_handmade_video_batches(tmp_path):
    model = tiny_model()
    trainer = MavorsTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=30, learning_rate=3e-3),
        train_dataset=handmade_dataset(8, kinds=("video",)),
        data_collator=handmade_collator,
        stage="2",
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_resume_from_checkpoint_reproduces_the_uninterrupted_losses(tmp_path):
    def run(output, **kwargs):
        trainer = MavorsTrainer(
            model=tiny_model(),
            args=training_args(
                output,
                max_steps=6,
                save_strategy="steps",
                save_steps=3,
                learning_rate=3e-3,
                per_device_train_batch_size=2,
            ),
            train_dataset=handmade_dataset(8, kinds=("video", "text", "image")),
            data_collator=handmade_collator,
            stage="2",
        )
        trainer.train(**kwargs)
        return {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}

    full = run(tmp_path / "full")
    checkpoint = tmp_path / "full" / "out" / "checkpoint-3"
    assert checkpoint.is_dir()
    resumed = run(tmp_path / "resumed", resume_from_checkpoint=str(checkpoint))
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # steps 1-3 come back from the checkpoint's trainer state
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), (step, full, resumed)


def test_handmade_batch_masks_all_but_the_answer():
    batch = handmade_batch([{"kind": "video", "seed": 1}, {"kind": "text", "seed": 2}])
    from test_training_fixtures import tokenizer

    for row in range(2):
        kept = batch["labels"][row][batch["labels"][row] != -100]
        assert tokenizer().decode(kept) == ("right" if row == 0 else "left") + "<|im_end|>"


@pytest.mark.parametrize(
    "stage, given, expected", [("1", {}, 1), ("1.5", {}, 1), ("2", {}, None), ("1", {"max_slices": 4}, 4)]
)
def test_sub_image_tiling_starts_with_stage_2(stage, given, expected, tmp_path):
    from PIL import Image

    from transformers_mavors.training import MavorsSFTCollator, MavorsTrainer
    from transformers_mavors.training.stages import stage_processor_kwargs

    processor = tiny_processor()
    collator = MavorsSFTCollator(processor, processor_kwargs=dict(given))
    MavorsTrainer(model=tiny_model(), args=training_args(tmp_path), data_collator=collator, stage=stage)
    assert collator.processor_kwargs.get("max_slices") == expected
    # what the processor then does with a wide image: one piece, or the global view plus sub-images
    image = Image.new("RGB", (224, 56), "white")
    grids = processor(text=["<|image_pad|>"], images=[image], **stage_processor_kwargs(stage, given))[
        "image_grid_thw"
    ]
    assert (len(grids) == 1) == (expected == 1)
