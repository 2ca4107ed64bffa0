"""Video DPO of Mavors with TRL's DPOTrainer (the paper's stage 3).

    python examples/train_dpo.py --model runs/stage2 --train-file pairs.jsonl --media-root /data \
        --output-dir runs/dpo

Preference records hold a prompt with videos or images and a chosen and a rejected reply (docs/training.md).
The reference model is a frozen copy of --model, or --ref-model, or (with --lora) the model with its adapters
switched off.

The paper's video-captioning pairs (appendix A) can be built first from a list of videos: each video is captioned
by --model, then cut into four equal parts, shuffled, and captioned again; the original caption is chosen, the
shuffled one rejected:

    python examples/train_dpo.py --model runs/stage2 --caption-negatives videos.txt --media-root /data \
        --output-dir runs/dpo [--only-build-pairs]

Multi-GPU: `accelerate launch --config_file examples/accelerate/zero2.yaml examples/train_dpo.py ...`.
Offline smoke run: `python examples/train_dpo.py --tiny-demo --output-dir /tmp/mavors-dpo --max-steps 10`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging
from trl import DPOConfig

import transformers_mavors  # noqa: F401 (registers the Mavors classes with the Auto API)
from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor
from transformers_mavors.training import (
    LORA_PRESETS,
    DistributedSetupError,
    MavorsDPOTrainer,
    MavorsPreferenceCollator,
    build_video_caption_pairs,
    cpu_distributed_kwargs,
    is_zero3_partitioned,
    load_mavors_dataset,
    make_captioner,
    mavors_lora_config,
    merge_and_save,
    write_jsonl,
)

logger = logging.get_logger("train_dpo")


def parse_args(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Mavors checkpoint directory (model + processor), e.g. a stage-2 run")
    parser.add_argument("--tiny-demo", action="store_true", help="tiny random model and synthetic videos")
    parser.add_argument("--ref-model", help="reference checkpoint (default: a frozen copy of --model)")
    parser.add_argument("--train-file", nargs="+", help="preference JSONL file(s)")
    parser.add_argument("--eval-file", nargs="+")
    parser.add_argument("--media-root")
    parser.add_argument("--caption-negatives", help="text file of video paths: build appendix-A pairs first")
    parser.add_argument("--caption-prompt", default="Describe the video in detail.")
    parser.add_argument("--caption-max-new-tokens", type=int, default=256)
    parser.add_argument("--only-build-pairs", action="store_true", help="stop after writing the pairs")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-length", type=int, help="most tokens per row; only completions are cut")
    parser.add_argument("--fps", type=float)
    parser.add_argument("--max-chunks", type=int)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss-type", default="sigmoid", help="TRL loss type (sigmoid = standard DPO)")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-5, help="LLM/projector rate; IVE/IFA get 1/10"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="warmup steps, or a fraction of all steps if < 1"
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per device")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--deepspeed")
    parser.add_argument("--report-to", default="none")
    parser.add_argument("--resume-from-checkpoint", help="'auto' (last checkpoint in --output-dir) or a path")
    parser.add_argument("--lora", choices=sorted(LORA_PRESETS))
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--merge-lora", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.tiny_demo):
        parser.error("give exactly one of --model or --tiny-demo")
    if not (args.train_file or args.caption_negatives or args.tiny_demo):
        parser.error("give --train-file or --caption-negatives")
    return args


def make_dpo_config(args) -> DPOConfig:
    """The DPOConfig from the flags; built before any model is loaded (see `main`)."""
    return DPOConfig(
        output_dir=args.output_dir,
        beta=args.beta,
        loss_type=[args.loss_type],
        max_length=args.max_length,
        learning_rate=args.learning_rate,
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
        eval_strategy="steps" if args.eval_file else "no",
        eval_steps=args.save_steps if args.eval_file else None,
        seed=args.seed,
        dataloader_num_workers=args.num_workers,
        deepspeed=args.deepspeed,
        report_to=[] if args.report_to == "none" else [args.report_to],
        **cpu_distributed_kwargs(),  # torchrun / accelerate launch on CPU: gloo, one job (not N copies)
    )


def main(argv=None):
    args = parse_args(argv)
    # before the models: under a ZeRO-3 launch (`zero3_init_flag: true`) this joins the process group and
    # registers the DeepSpeed config, so `from_pretrained` loads straight into shards (`deepspeed.zero.Init`)
    config = make_dpo_config(args)
    output_dir = Path(args.output_dir)
    media_root, train_files = args.media_root, args.train_file
    if args.tiny_demo:
        from accelerate import PartialState

        from transformers_mavors.training.demo import tiny_demo_model_and_processor, write_demo_data

        with PartialState().main_process_first():  # rank 0 writes the videos, the others reuse them
            demo = write_demo_data(output_dir / "demo-data")
        model, processor = tiny_demo_model_and_processor(args.seed)
        media_root, train_files = demo["media_root"], train_files or [demo["dpo"]]
    else:
        model = MavorsForConditionalGeneration.from_pretrained(args.model)
        processor = MavorsProcessor.from_pretrained(args.model)
    if is_zero3_partitioned(model) and config.process_index == 0:
        print("zero.Init: the model was loaded straight into ZeRO-3 shards", flush=True)

    if args.caption_negatives:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "--caption-negatives writes files and generates captions: build the pairs in one process with "
                "--only-build-pairs, then launch the multi-process training on caption_pairs.jsonl"
            )
        videos = [
            line.strip() for line in Path(args.caption_negatives).read_text().splitlines() if line.strip()
        ]
        captioner = make_captioner(
            model.eval(), processor, args.caption_prompt, max_new_tokens=args.caption_max_new_tokens
        )
        records = build_video_caption_pairs(
            videos,
            captioner,
            output_dir / "shuffled-videos",
            media_root,
            prompt=args.caption_prompt,
            seed=args.seed,
        )
        pairs = write_jsonl(records, output_dir / "caption_pairs.jsonl")
        logger.warning("wrote %d caption pairs to %s", len(records), pairs)
        train_files = (train_files or []) + [pairs]
        if args.only_build_pairs:
            return None
        if media_root is None:
            logger.warning("no --media-root: the shuffled copies are referenced by absolute path")

    ref_model = MavorsForConditionalGeneration.from_pretrained(args.ref_model) if args.ref_model else None
    peft_config = None
    if args.lora:
        peft_config = mavors_lora_config(
            model, args.lora, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout
        )
    options = {"fps": args.fps, "max_chunks": args.max_chunks}
    trainer = MavorsDPOTrainer(
        model=model.train(),
        ref_model=ref_model,
        args=config,
        data_collator=MavorsPreferenceCollator(
            processor, media_root, args.max_length, {k: v for k, v in options.items() if v is not None}
        ),
        train_dataset=load_mavors_dataset(train_files, media_root),
        eval_dataset=load_mavors_dataset(args.eval_file, media_root) if args.eval_file else None,
        processing_class=processor,
        peft_config=peft_config,
        stage="dpo",
    )
    resume = args.resume_from_checkpoint
    if resume == "auto":
        resume = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
        summary = {**result.metrics, "first_margin": margins[:1], "last_margin": margins[-1:]}
        (output_dir / "train_results.json").write_text(json.dumps(summary, indent=2))
        if args.lora and args.merge_lora:
            merge_and_save(trainer.accelerator.unwrap_model(trainer.model), output_dir / "merged", processor)
    return trainer


if __name__ == "__main__":
    try:
        main()
    except DistributedSetupError as error:  # a launch that would not train as one job: one line, no traceback
        raise SystemExit(f"error: {error}") from None
