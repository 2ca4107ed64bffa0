"""Video SFT and video DPO with TRL (SFTTrainer, DPOTrainer), on tiny synthetic videos decoded by the processor."""

import os

import pytest
import torch
from test_training_fixtures import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    CAPTIONS,
    one_torch_thread,
    preference_records,
    sft_records,
    tiny_model,
    tiny_processor,
    write_direction_videos,
)
from trl import DPOConfig, DPOTrainer, SFTConfig

from transformers_mavors.training import (
    MavorsDPOTrainer,
    MavorsPreferenceCollator,
    MavorsSFTTrainer,
    build_video_caption_pairs,
    create_reference_model,
    load_mavors_dataset,
    mavors_lora_config,
    parameter_component,
)

COMMON = dict(
    per_device_train_batch_size=2,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    bf16=False,
    disable_tqdm=True,
    seed=0,
    dataloader_num_workers=0,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return root, write_direction_videos(root, num=8)


def logged(trainer, key):
    return [log[key] for log in trainer.state.log_history if key in log]


def test_video_sft_with_trl_loss_decreases(media, tmp_path):
    root, videos = media
    trainer = MavorsSFTTrainer(
        model=tiny_model(),
        args=SFTConfig(output_dir=str(tmp_path), max_steps=30, learning_rate=5e-3, max_length=None, **COMMON),
        train_dataset=load_mavors_dataset(sft_records(videos)),
        processing_class=tiny_processor(),
        media_root=root,
        stage="2",
    )
    trainer.train()
    losses = logged(trainer, "loss")
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"SFT loss (TRL SFTTrainer, 30 steps): {first:.3f} -> {last:.3f}")
    assert last < 0.3 * first, losses
    assert logged(trainer, "mean_token_accuracy")[-1] > 0.8


def caption_pairs(root, videos, tmp_path):
    """Preference records built by the paper's recipe (appendix A) with a stand-in captioner: the original video
    is captioned with its direction, its four-part shuffled copy as jumping around."""
    directions = dict(videos)

    def fake_captioner(path: str) -> str:
        if "shuffled" in path:
            return "The square jumps from place to place."
        return CAPTIONS[directions[os.path.relpath(path, root)]]

    return build_video_caption_pairs(
        [path for path, _ in videos], fake_captioner, tmp_path / "negatives", media_root=root, seed=0
    )


def test_video_dpo_with_trl_grows_the_chosen_reward_margin(media, tmp_path):
    root, videos = media
    model = tiny_model()
    trainer = MavorsDPOTrainer(
        model=model,
        args=DPOConfig(
            output_dir=str(tmp_path), max_steps=12, learning_rate=1e-3, beta=0.1, max_length=None, **COMMON
        ),
        train_dataset=load_mavors_dataset(caption_pairs(root, videos, tmp_path)),
        processing_class=tiny_processor(),
        media_root=root,
        stage="dpo",
    )
    reference = trainer.ref_model
    reference_before = {n: p.detach().clone() for n, p in reference.named_parameters()}
    assert reference is not model and not any(p.requires_grad for p in reference.parameters())
    trainer.train()
    margins = logged(trainer, "rewards/margins")
    print(f"DPO reward margin (TRL DPOTrainer, 12 steps): {margins[0]:.4f} -> {margins[-1]:.4f}")
    assert margins[0] == pytest.approx(0.0, abs=1e-3)  # policy == reference at step 1
    assert margins[-1] > 0.5 and sum(margins[-3:]) > sum(margins[:3])
    assert logged(trainer, "rewards/accuracies")[-1] == 1.0
    assert all(torch.equal(p, reference_before[n]) for n, p in reference.named_parameters())


def test_stock_dpo_trainer_accepts_the_preference_collator_and_an_explicit_ref_model(media, tmp_path):
    root, videos = media
    model = tiny_model()
    processor = tiny_processor()
    vision_before = {n: p.detach().clone() for n, p in model.named_parameters() if "vision_model" in n}
    trainer = DPOTrainer(
        model=model,
        ref_model=create_reference_model(model),
        args=DPOConfig(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-3, max_length=None, **COMMON),
        data_collator=MavorsPreferenceCollator(processor, media_root=root),
        train_dataset=load_mavors_dataset(preference_records(videos)),
        processing_class=processor,
    )
    trainer.train()
    assert len(logged(trainer, "rewards/margins")) == 2
    # the video reached the model: the vision tower was trained through the DPO loss
    assert any(
        not torch.equal(p, vision_before[n]) for n, p in model.named_parameters() if n in vision_before
    )


def test_video_dpo_with_lora_uses_the_adapter_free_model_as_reference(media, tmp_path):
    root, videos = media
    model = tiny_model()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MavorsDPOTrainer(
        model=model,
        args=DPOConfig(
            output_dir=str(tmp_path), max_steps=8, learning_rate=5e-3, beta=0.1, max_length=None, **COMMON
        ),
        train_dataset=load_mavors_dataset(caption_pairs(root, videos, tmp_path)),
        processing_class=tiny_processor(),
        media_root=root,
        peft_config=mavors_lora_config(model, "llm+projector", r=8, lora_alpha=16, lora_dropout=0.0),
    )
    assert trainer.ref_model is None  # TRL switches the adapters off for pi_ref
    trainer.train()
    margins = logged(trainer, "rewards/margins")
    print(f"LoRA DPO reward margin (8 steps): {margins[0]:.4f} -> {margins[-1]:.4f}")
    assert margins[-1] > margins[0] + 0.05
    base_model = trainer.model.get_base_model()
    for name, param in base_model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base[name.replace(".base_layer", "")]), name


def test_sft_trainer_with_a_stage_freezes_and_keeps_raw_columns(media, tmp_path):
    root, videos = media
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MavorsSFTTrainer(
        model=model,
        # TRL's defaults: remove_unused_columns=True, gradient checkpointing on, max_length=1024
        args=SFTConfig(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-3, **COMMON),
        train_dataset=load_mavors_dataset(sft_records(videos)),
        processing_class=tiny_processor(),
        media_root=root,
        stage="1",
    )
    # TRL turns DDP's unused-parameter search on for VLMs; Mavors' dummy vision pass makes it unnecessary
    assert trainer.args.ddp_find_unused_parameters is False
    trainer.train()
    for name, param in model.named_parameters():
        frozen = parameter_component(name) in ("ive", "llm")
        assert torch.equal(param, before[name]) == frozen, name
