"""The `mavors` command line: generate, convert, inspect."""

import argparse
import json
import sys
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def compression_threshold(text: str) -> float:
    from .configuration_mavors import check_token_compression_threshold

    try:
        return check_token_compression_threshold(float(text), "--token-compression-threshold")
    except ValueError as error:  # float() of a non-number, NaN, negative
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mavors", description="Mavors video/image language models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="answer a prompt about a video or an image")
    generate.add_argument(
        "--model",
        help="checkpoint directory or Hub id (default: the tiny offline demo model of the synthetic domain)",
    )
    media = generate.add_mutually_exclusive_group()
    media.add_argument("--video", help="video file")
    media.add_argument("--image", help="image file")
    generate.add_argument("--prompt", required=True, help="the question or instruction")
    generate.add_argument("--fps", type=positive_float, help="sampling rate (default: the processor's)")
    generate.add_argument("--max-chunks", type=positive_int, help="chunk budget before accelerated playback")
    generate.add_argument("--max-new-tokens", type=positive_int, default=128)
    generate.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    generate.add_argument(
        "--token-compression-threshold",
        type=compression_threshold,
        metavar="COS",
        help="merge video tokens whose cosine similarity to the same token of the previous chunk exceeds COS "
        "(e.g. 0.9; default: the checkpoint's setting, normally off)",
    )
    generate.add_argument("--dtype", choices=DTYPES, default="auto")
    generate.add_argument("--trust-remote-code", action="store_true", help="load a checkpoint's own code")
    generate.set_defaults(func=run_generate)

    convert = commands.add_parser("convert", help="build a Stage-1-ready checkpoint from SigLIP + Qwen2.5")
    convert.add_argument("--vision", required=True, help="SigLIP checkpoint directory")
    convert.add_argument("--text", required=True, help="Qwen2 / Qwen2.5 causal-LM checkpoint directory")
    convert.add_argument("--output", required=True, help="directory to write (must not hold a checkpoint)")
    convert.add_argument("--frames-per-chunk", type=positive_int, default=16)
    convert.add_argument("--ifa-layers", type=int, default=3, help="aggregator depth L_inter (0 = none)")
    convert.add_argument("--fps", type=positive_float, help="processor sampling rate")
    convert.add_argument("--max-chunks", type=positive_int, help="processor chunk budget")
    convert.add_argument("--max-slices", type=positive_int, help="most sub-images per image")
    convert.add_argument("--dtype", choices=DTYPES[1:], default="bfloat16")
    convert.set_defaults(func=run_convert)

    inspect = commands.add_parser("inspect", help="show the chunks, positions and tokens a video becomes")
    inspect.add_argument("video", help="video file")
    inspect.add_argument("--model", help="checkpoint whose processor to use (default: Mavors-7B settings)")
    inspect.add_argument("--fps", type=positive_float)
    inspect.add_argument("--max-chunks", type=positive_int)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.set_defaults(func=run_inspect)

    niah = commands.add_parser("niah", help="chunk-level needle-in-a-haystack evaluation of a checkpoint")
    niah.add_argument("--model", required=True, help="checkpoint directory")
    niah.add_argument("--haystack", help="haystack video file (default: the synthetic drifting-square video)")
    niah.add_argument(
        "--chunks", type=positive_int, nargs="+", default=[2, 4, 8, 16, 32], help="video lengths c_V to test"
    )
    niah.add_argument("--frames", type=int, nargs="+", help="needle frames within its chunk (default: all)")
    niah.add_argument("--question", help="the question (default: 'What colour is the flash?')")
    niah.add_argument("--batch-size", type=positive_int, default=16)
    niah.add_argument("--json", help="write the per-cell accuracies and every answer to this file")
    niah.add_argument("--plot", help="write the c_V x chunk heatmap to this PNG file")
    niah.add_argument("--trust-remote-code", action="store_true", help="load a checkpoint's own code")
    niah.set_defaults(func=run_niah)
    return parser


def _processor_options(args) -> dict:
    options = {"fps": getattr(args, "fps", None), "max_chunks": getattr(args, "max_chunks", None)}
    return {key: value for key, value in options.items() if value is not None}


def run_generate(args) -> int:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, TextStreamer

    from . import video_processing_mavors
    from .hub import check_checkpoint_dir
    from .pipelines import encode_videos_first

    if args.video is None and args.image is None:
        raise SystemExit("mavors generate: error: one of --video or --image is required")
    if args.model is None:
        from .synthetic.demo import demo_model_path

        args.model = str(demo_model_path())
        print(
            f"mavors generate: no --model given, using the bundled demo model ({args.model}): a 0.6 M-parameter "
            "toy trained only on synthetic coloured-shape videos (docs/learning.md). Pass --model for a real "
            "checkpoint.",
            file=sys.stderr,
        )
    check_checkpoint_dir(args.model)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, trust_remote_code=args.trust_remote_code
    ).eval()
    processor.check_model_config(model.config)
    content = [{"type": "video", "path": args.video} if args.video else {"type": "image", "path": args.image}]
    content.append({"type": "text", "text": args.prompt})
    video_processing_mavors.PROGRESS_BAR_MIN_SECONDS = (
        0.0  # on the command line, always show decoding progress
    )
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=_processor_options(args),
    ).to(model.device)
    streamer = (
        TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    )
    full = int((inputs["input_ids"] == processor.video_token_id).sum())
    with torch.inference_mode():
        inputs, threshold = encode_videos_first(model, processor, inputs, args.token_compression_threshold)
        if "mm_encoder_outputs" in inputs:
            kept = int(inputs["mm_encoder_outputs"]["video"].token_counts.sum())
            print(
                f"token compression at threshold {threshold:g}: kept {kept} of {full} video tokens "
                f"({kept / full:.0%}); prompt {inputs['input_ids'].shape[1]} tokens",
                file=sys.stderr,
            )
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=False, streamer=streamer
        )
    if not args.stream:
        print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return 0


def run_convert(args) -> int:
    import torch

    from .hub import write_model_card
    from .modeling_mavors import MavorsForConditionalGeneration
    from .processing_mavors import MavorsProcessor

    output = Path(args.output)
    if (output / "config.json").exists():
        raise SystemExit(
            f"mavors convert: error: {output} already holds a checkpoint; choose a new directory"
        )
    model = MavorsForConditionalGeneration.from_vision_text_pretrained(
        args.vision,
        args.text,
        frames_per_chunk=args.frames_per_chunk,
        ifa_num_hidden_layers=args.ifa_layers,
        dtype=getattr(torch, args.dtype),
    )
    options = {"max_slices": args.max_slices, **_processor_options(args)}
    processor = MavorsProcessor.from_vision_text_pretrained(
        args.vision,
        args.text,
        frames_per_chunk=args.frames_per_chunk,
        **{key: value for key, value in options.items() if value is not None},
    )
    # write into a sibling temporary directory and rename, so a failure leaves nothing half-written
    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    write_model_card(staging, model.config, processor, base_models=(str(args.vision), str(args.text)))
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        output.rmdir()  # only an empty directory can get here
    staging.rename(output)
    print(f"wrote a Stage-1-ready Mavors checkpoint to {output}")
    return 0


def run_inspect(args) -> int:
    from transformers import AutoProcessor

    from .configuration_mavors import num_visual_tokens
    from .video_processing_mavors import MavorsVideoProcessor

    if args.model:
        video_processor = AutoProcessor.from_pretrained(args.model).video_processor
    else:
        video_processor = MavorsVideoProcessor()
    # The processor's own plan, from the container header: no frame is decoded.
    plan = video_processor.plan_video(args.video, **_processor_options(args))
    meta, grid = plan["metadata"], plan["grid_thw"]
    per_chunk = num_visual_tokens((1, grid[1], grid[2]), video_processor.spatial_merge_size)
    report = {
        "video": args.video,
        "duration_s": round(meta.duration, 3),
        "fps": meta.fps,
        "playback_speed": meta.playback_speed,
        "frames_kept": meta.num_frames,
        "frame_size": [meta.resized_width, meta.resized_height],
        "chunks": grid[0],
        "tokens_per_chunk": per_chunk,
        "total_tokens": per_chunk * grid[0],
        "chunk_table": [
            {"chunk": i, "position": position, "start_s": round(start, 3), "end_s": round(end, 3)}
            for i, (position, (start, end)) in enumerate(
                zip(meta.chunk_positions, meta.chunk_timestamps, strict=True)
            )
        ],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.video}: {report['duration_s']} s, sampled at {meta.fps:g} fps", end="")
    print(f" (played {meta.playback_speed:.2f}x faster to fit)" if meta.playback_speed > 1 else "")
    print(f"frames kept {meta.num_frames}, resized to {meta.resized_width}x{meta.resized_height}")
    print(f"{grid[0]} chunks x {per_chunk} tokens = {report['total_tokens']} visual tokens")
    print(f"{'chunk':>5}  {'position':>8}  {'start s':>8}  {'end s':>8}")
    for row in report["chunk_table"]:
        print(f"{row['chunk']:>5}  {row['position']:>8}  {row['start_s']:>8.2f}  {row['end_s']:>8.2f}")
    return 0


def run_niah(args) -> int:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .hub import check_checkpoint_dir
    from .evaluation import niah

    model_dir = args.model
    check_checkpoint_dir(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=args.trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=args.trust_remote_code)
    processor.check_model_config(model.config)
    haystack = niah.read_frames(args.haystack, processor.video_processor.fps) if args.haystack else None
    options = {"question": args.question} if args.question else {}
    result = niah.run_needle_in_haystack(
        model, processor, haystack, args.chunks, frames=args.frames, batch_size=args.batch_size, **options
    )
    print(f"{'c_V':>4}  accuracy  (per needle chunk, {result.trials} trials each)")
    for n in result.chunk_counts:
        cells = " ".join(f"{value:.2f}" for value in result.accuracy[n])
        print(f"{n:>4}  {sum(result.accuracy[n]) / n:8.3f}  {cells}")
    if args.json:
        niah.save_result(result, args.json)
    if args.plot:
        niah.plot_heatmap(result, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    import transformers_mavors  # noqa: F401  (registers the Auto classes)

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError) as error:
        print(f"mavors {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
