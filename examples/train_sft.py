"""Supervised fine-tuning of Mavors, one stage of the paper's recipe at a time (stages 1, 1.5 and 2).

One process (CPU or one GPU):

    python examples/train_sft.py --stage 2 --model ckpt/ --train-file train.jsonl --media-root /data \
        --output-dir runs/stage2

Several GPUs / machines (DDP, DeepSpeed ZeRO-2 or ZeRO-3, FSDP; see docs/training.md):

    accelerate launch --config_file examples/accelerate/zero2.yaml examples/train_sft.py --stage 2 ...

Stage 1 can start from the two pretrained parts instead of a Mavors checkpoint:

    python examples/train_sft.py --stage 1 --siglip siglip-so400m/ --qwen qwen2.5-7b/ --train-file ...

Try it in seconds, offline (a tiny random model on synthetic videos):

    python examples/train_sft.py --tiny-demo --output-dir /tmp/mavors-demo --max-steps 20

An interrupted run continues with `--resume-from-checkpoint auto` (the last checkpoint in --output-dir) or a path.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

import transformers_mavors  # noqa: F401 (registers the Mavors classes with the Auto API)
from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor
from transformers_mavors.training import (
    LORA_PRESETS,
    DistributedSetupError,
    MavorsSFTCollator,
    MavorsTrainer,
    apply_lora,
    cpu_distributed_kwargs,
    is_zero3_partitioned,
    load_mavors_dataset,
    merge_and_save,
)

logger = logging.get_logger("train_sft")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("model (one of --model, --siglip + --qwen, --tiny-demo)")
    source.add_argument("--model", help="Mavors checkpoint directory (model + processor)")
    source.add_argument(
        "--siglip", help="SigLIP checkpoint, to assemble a fresh Mavors with --qwen (stage 1)"
    )
    source.add_argument("--qwen", help="Qwen2 causal-LM checkpoint with its tokenizer")
    source.add_argument("--tiny-demo", action="store_true", help="tiny random model and synthetic videos")

    data = parser.add_argument_group("data")
    data.add_argument("--train-file", nargs="+", help="JSONL file(s) in the format of docs/training.md")
    data.add_argument("--eval-file", nargs="+", help="JSONL file(s) for evaluation")
    data.add_argument("--media-root", help="directory that relative media paths are resolved against")
    data.add_argument(
        "--check-media", action="store_true", help="check every media file exists before training"
    )
    data.add_argument("--max-length", type=int, help="most tokens per sample (never cuts through a video)")
    data.add_argument("--fps", type=float, help="video sampling rate (processor default if unset)")
    data.add_argument("--max-chunks", type=int, help="most chunks per video (longer videos play faster)")
    data.add_argument("--max-slices", type=int, help="most sub-images per image")

    train = parser.add_argument_group("training")
    train.add_argument("--stage", default="2", choices=["1", "1.5", "2"], help="paper stage (default 2)")
    train.add_argument("--output-dir", required=True)
    train.add_argument(
        "--trainer", default="trl", choices=["trl", "transformers"], help="TRL SFTTrainer or Trainer"
    )
    train.add_argument(
        "--learning-rate", type=float, default=1e-5, help="LLM/projector rate; IVE/IFA get 1/10"
    )
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument(
        "--warmup", type=float, default=0.0, help="warmup steps, or a fraction of all steps if < 1"
    )
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--max-steps", type=int, default=-1)
    train.add_argument("--batch-size", type=int, default=1, help="per device")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--bf16", action="store_true")
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--save-steps", type=int, default=500)
    train.add_argument("--save-total-limit", type=int, default=3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--num-workers", type=int, default=2, help="dataloader workers (decoding runs there)")
    train.add_argument("--deepspeed", help="DeepSpeed JSON (alternative to an accelerate config)")
    train.add_argument("--report-to", default="none")
    train.add_argument("--resume-from-checkpoint", help="'auto' (last checkpoint in --output-dir) or a path")

    lora = parser.add_argument_group("LoRA")
    lora.add_argument(
        "--lora", choices=sorted(LORA_PRESETS), help="train LoRA adapters instead of full weights"
    )
    lora.add_argument("--lora-r", type=int, default=16)
    lora.add_argument("--lora-alpha", type=int, default=32)
    lora.add_argument("--lora-dropout", type=float, default=0.05)
    lora.add_argument(
        "--lora-patch-embedding", action="store_true", help="also train the Conv3d patch embedding"
    )
    lora.add_argument(
        "--merge-lora", action="store_true", help="also save a merged checkpoint in OUTPUT/merged"
    )

    args = parser.parse_args(argv)
    sources = sum(bool(x) for x in (args.model, args.siglip or args.qwen, args.tiny_demo))
    if sources != 1 or bool(args.siglip) != bool(args.qwen):
        parser.error("give exactly one of --model, --siglip with --qwen, or --tiny-demo")
    if not args.tiny_demo and not args.train_file:
        parser.error("--train-file is required (except with --tiny-demo)")
    return args


def processor_kwargs(args) -> dict:
    options = {"fps": args.fps, "max_chunks": args.max_chunks, "max_slices": args.max_slices}
    return {key: value for key, value in options.items() if value is not None}


def load_model_and_processor(args):
    """(model, processor, media_root, train files) from the flags."""
    if args.tiny_demo:
        from accelerate import PartialState

        from transformers_mavors.training.demo import tiny_demo_model_and_processor, write_demo_data

        with PartialState().main_process_first():  # rank 0 writes the videos, the others reuse them
            demo = write_demo_data(Path(args.output_dir) / "demo-data")
        model, processor = tiny_demo_model_and_processor(args.seed)
        return model, processor, demo["media_root"], args.train_file or [demo["sft"]]
    if args.model:
        model = MavorsForConditionalGeneration.from_pretrained(args.model)
        processor = MavorsProcessor.from_pretrained(args.model)
    else:
        model = MavorsForConditionalGeneration.from_vision_text_pretrained(args.siglip, args.qwen)
        processor = MavorsProcessor.from_vision_text_pretrained(
            args.siglip, args.qwen, frames_per_chunk=model.config.vision_config.frames_per_chunk
        )
    return model, processor, args.media_root, args.train_file


def training_kwargs(args) -> dict:
    """TrainingArguments / SFTConfig fields shared by both trainers."""
    return dict(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        bf16=args.bf16,
        activation_checkpointing=args.gradient_checkpointing,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy="steps" if args.eval_file else "no",
        eval_steps=args.save_steps if args.eval_file else None,
        seed=args.seed,
        dataloader_num_workers=args.num_workers,
        deepspeed=args.deepspeed,
        report_to=[] if args.report_to == "none" else [args.report_to],
        **cpu_distributed_kwargs(),  # torchrun / accelerate launch on CPU: gloo, one job (not N copies)
    )


def resume_path(args) -> str | None:
    if args.resume_from_checkpoint != "auto":
        return args.resume_from_checkpoint
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    if last is None:
        logger.warning(
            "--resume-from-checkpoint auto: no checkpoint in %s, starting from scratch", args.output_dir
        )
    return last


def make_training_args(args):
    """SFTConfig (TRL) or TrainingArguments from the flags.

    Built before the model on purpose: under a ZeRO-3 launch (`zero3.yaml`, `zero3_init_flag: true`) creating
    the arguments joins the process group and registers the DeepSpeed config, so `from_pretrained` then loads
    every weight straight into its shard (`deepspeed.zero.Init`) instead of a full copy on every rank.
    """
    if args.trainer == "trl":
        from trl import SFTConfig

        return SFTConfig(max_length=args.max_length, **training_kwargs(args))
    from transformers import TrainingArguments

    return TrainingArguments(**training_kwargs(args))


def main(argv=None):
    args = parse_args(argv)
    training_args = make_training_args(args)
    model, processor, media_root, train_files = load_model_and_processor(args)
    if is_zero3_partitioned(model) and training_args.process_index == 0:
        print("zero.Init: the model was loaded straight into ZeRO-3 shards", flush=True)
    train_dataset = load_mavors_dataset(train_files, media_root, check_media_exist=args.check_media)
    eval_dataset = load_mavors_dataset(args.eval_file, media_root) if args.eval_file else None
    if args.lora:
        model = apply_lora(
            model,
            args.lora,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            include_patch_embedding=args.lora_patch_embedding,
        )
    collator = MavorsSFTCollator(processor, media_root, args.max_length, processor_kwargs(args))

    if args.trainer == "trl":
        from transformers_mavors.training import MavorsSFTTrainer

        trainer_class = MavorsSFTTrainer
    else:
        trainer_class = MavorsTrainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        stage=args.stage,
    )

    result = trainer.train(resume_from_checkpoint=resume_path(args) if args.resume_from_checkpoint else None)
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        with open(Path(args.output_dir) / "train_results.json", "w") as handle:
            json.dump({**result.metrics, "stage": args.stage}, handle, indent=2)
        if args.lora and args.merge_lora:
            merge_and_save(
                trainer.accelerator.unwrap_model(trainer.model), Path(args.output_dir) / "merged", processor
            )
    return trainer


if __name__ == "__main__":
    try:
        main()
    except DistributedSetupError as error:  # a launch that would not train as one job: one line, no traceback
        raise SystemExit(f"error: {error}") from None
