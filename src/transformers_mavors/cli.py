"""The `mavors` commands: `run_generate`, `run_chat`, `run_convert`, `run_inspect`, `run_niah`, one function each.

The console script is `transformers_mavors_cli.main` (beside this package): it parses the arguments with the
standard library alone, so `--help`, `--version` and usage errors never wait for torch, then imports this module
and calls `run_<command>(args)`. `inspect` needs neither torch nor transformers: its command lives in
`transformers_mavors_planning.report`, which the console script calls directly (re-exported here, like
`build_parser` and `main`, for callers of the old names).
"""

import sys
from pathlib import Path

from transformers_mavors_cli import PLAIN_USER_ERRORS, build_parser, main
from transformers_mavors_planning.report import run_inspect

from .convert import ConversionInterrupted

# Errors that are the user's input or environment, not a bug: one line, no traceback (`--debug` shows it).
USER_ERRORS = (*PLAIN_USER_ERRORS, ConversionInterrupted)


def _processor_options(args) -> dict:
    options = {"fps": getattr(args, "fps", None), "max_chunks": getattr(args, "max_chunks", None)}
    return {key: value for key, value in options.items() if value is not None}


def _strict_weights(args) -> dict:
    """Missing, unexpected or non-finite tensors are an error on the command line (our loader; remote code has its
    own `from_pretrained`)."""
    return {} if getattr(args, "trust_remote_code", False) else {"strict_weights": True}


def run_generate(args) -> int:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, TextStreamer

    from .configuration_mavors import check_token_compression_threshold
    from .generation import encode_videos_first, generate_answers, prepare_chat_inputs
    from .hub import check_checkpoint_dir

    if args.model is None:
        from .synthetic.demo import demo_model_path

        args.model = str(demo_model_path())
        print(
            f"mavors generate: no --model given, using the bundled demo model ({args.model}): a 0.6 M-parameter "
            "toy trained only on synthetic coloured-shape videos (docs/learning.md). Pass --model for a real "
            "checkpoint.",
            file=sys.stderr,
        )
    args.model = str(check_checkpoint_dir(args.model, revision=args.revision))
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, trust_remote_code=args.trust_remote_code, **_strict_weights(args)
    ).eval()
    processor.check_model_config(model.config)
    content = [{"type": "video", "path": args.video} if args.video else {"type": "image", "path": args.image}]
    content.append({"type": "text", "text": args.prompt})
    # on the command line, every video shows its decoding progress
    options = (
        {**_processor_options(args), "progress_min_seconds": 0.0} if args.video else _processor_options(args)
    )
    inputs = prepare_chat_inputs(processor, [[{"role": "user", "content": content}]], options).to(
        model.device
    )
    threshold = check_token_compression_threshold(
        args.token_compression_threshold, "--token-compression-threshold"
    )
    full = int((inputs["input_ids"] == processor.video_token_id).sum())
    with torch.inference_mode():
        inputs, threshold = encode_videos_first(model, processor, inputs, threshold)
    if "mm_encoder_outputs" in inputs:
        kept = int(inputs["mm_encoder_outputs"]["video"].token_counts.sum())
        print(
            f"token compression at threshold {threshold:g}: kept {kept} of {full} video tokens "
            f"({kept / full:.0%}); prompt {inputs['input_ids'].shape[1]} tokens",
            file=sys.stderr,
        )
    streamer = (
        TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    )
    (answer,) = generate_answers(
        model, processor, inputs, max_new_tokens=args.max_new_tokens, do_sample=False, streamer=streamer
    )
    if not args.stream:
        print(answer.strip())
    return 0


def _read_question(prompt: str) -> str:
    """A line of stdin; the prompt is shown only to a person at a terminal (piped answers stay one per line)."""
    if sys.stdin.isatty():
        return input(prompt)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def run_chat(args) -> int:
    """`mavors chat --video PATH`: the video encoded once (a live session), then one answer per question line,
    until an empty line or end of input (docs/live-video.md)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .hub import check_checkpoint_dir
    from .live import MavorsVideoSession
    from .live import run_chat as chat_loop

    if args.model is None:
        from .synthetic.demo import demo_model_path

        args.model = str(demo_model_path())
        print(f"mavors chat: no --model given, using the bundled demo model ({args.model})", file=sys.stderr)
    check_checkpoint_dir(args.model)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, trust_remote_code=args.trust_remote_code
    ).eval()
    with torch.inference_mode():
        session = MavorsVideoSession.from_video(
            model, processor, args.video, fps=args.fps, max_chunks=args.max_chunks
        )
        print(
            f"mavors chat: {args.video} encoded once ({session.num_frames} frames, {session.num_chunks} chunks); "
            "one question per line, an empty line or end of input ends",
            file=sys.stderr,
        )
        chat_loop(
            session,
            read_line=_read_question,
            write=lambda answer: print(answer.strip(), flush=True),
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
        )
    return 0


def run_convert(args) -> int:
    import torch

    from .convert import check_inputs, check_output_location, write_checkpoint_atomically
    from .hub import write_model_card
    from .modeling_mavors import MavorsForConditionalGeneration
    from .processing_mavors import MavorsProcessor

    # everything that can be refused is refused before any weight is loaded
    output = check_output_location(args.output)
    vision_dir, text_dir = check_inputs(args.vision, args.text, revision=args.revision)
    model = MavorsForConditionalGeneration.from_vision_text_pretrained(
        vision_dir,
        text_dir,
        frames_per_chunk=args.frames_per_chunk,
        ifa_num_hidden_layers=args.ifa_layers,
        dtype=getattr(torch, args.dtype),
    )
    options = {"max_slices": args.max_slices, **_processor_options(args)}
    processor = MavorsProcessor.from_vision_text_pretrained(
        vision_dir,
        text_dir,
        frames_per_chunk=args.frames_per_chunk,
        **{key: value for key, value in options.items() if value is not None},
    )

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_model_card(staging, model.config, processor, base_models=(str(args.vision), str(args.text)))

    write_checkpoint_atomically(output, write)
    print(f"wrote a Stage-1-ready Mavors checkpoint to {output}")
    return 0


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib (or drop --plot)"
        ) from None


def run_niah(args) -> int:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .evaluation import niah
    from .hub import check_checkpoint_dir

    if args.plot:
        _require_matplotlib()  # before the evaluation, not after it
    model_dir = str(check_checkpoint_dir(args.model, revision=args.revision))
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=args.trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, trust_remote_code=args.trust_remote_code, **_strict_weights(args)
    )
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


__all__ = ["build_parser", "main", "run_generate", "run_convert", "run_inspect", "run_niah"]
