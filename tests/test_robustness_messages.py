"""Finding 9 of issue 18 (outside the CLI): pointers for LoRA output folders, model cards without local paths, and
no warnings a user cannot act on from our models and trainers."""

import warnings

import pytest
import torch
from transformers import TrainingArguments
from transformers.testing_utils import CaptureLogger

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.hub import check_checkpoint_dir, model_card
from transformers_mavors.testing_utils import tiny_mavors_config, tiny_processor


@pytest.mark.parametrize("with_merged", [True, False])
def test_lora_output_folder_points_at_merged(tmp_path, with_merged):
    (tmp_path / "adapter_config.json").write_text("{}")
    if with_merged:
        (tmp_path / "merged").mkdir()
        (tmp_path / "merged" / "config.json").write_text("{}")
    expected = "merged'" if with_merged else "merge it first"
    with pytest.raises(FileNotFoundError, match=f"LoRA adapters.*{expected}"):
        check_checkpoint_dir(tmp_path)


@pytest.mark.parametrize(
    "base_models, listed",
    [
        (("LOCAL", "Qwen/Qwen2.5-7B-Instruct"), ["Qwen/Qwen2.5-7B-Instruct"]),
        (
            ("/cache/models--google--siglip-so400m-patch14-384/snapshots/abc",),
            ["google/siglip-so400m-patch14-384"],
        ),
        (("LOCAL", "./relative/dir"), []),
    ],
)
def test_model_card_lists_only_hub_ids_as_base_models(tmp_path, tokenizer, base_models, listed):
    base_models = tuple(str(tmp_path) if name == "LOCAL" else name for name in base_models)
    card = model_card(tiny_mavors_config(tokenizer), base_models=base_models)
    header = card.split("---")[1]
    assert [
        line.strip()[2:] for line in header.splitlines() if line.strip().startswith("- ") and "/" in line
    ] == listed
    assert str(tmp_path) not in card


def test_trainer_causes_no_actionable_free_warnings(tmp_path, tokenizer):
    from transformers_mavors.training import MavorsTrainer

    model = MavorsForConditionalGeneration(tiny_mavors_config(tokenizer))
    model.config.get_text_config().pad_token_id = (
        0  # differs from the tokenizer's, as in checkpoints built from Qwen2
    )
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    from transformers import trainer_utils

    with CaptureLogger(trainer_utils.logger) as captured:
        trainer = MavorsTrainer(model=model, args=args, processing_class=tiny_processor(tokenizer))
    assert "PAD/BOS/EOS" not in captured.out
    assert trainer.args.dataloader_pin_memory is torch.cuda.is_available()
    assert model.config.get_text_config().pad_token_id == tokenizer.pad_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert model.is_gradient_checkpointing is False
