"""The `mavors` console script: parse the arguments, then load the package for the command asked.

This module sits beside the `transformers_mavors` package, not inside it, because importing anything inside the
package runs its `__init__`, which imports torch and transformers to register the Auto classes (seconds). Here
parsing needs only the standard library, so `mavors --help`, `mavors --version` and every usage error answer at
once; the commands themselves are the `run_<command>` functions of `transformers_mavors.cli`, imported when one
runs, except `inspect`, which plans from the container header with `transformers_mavors_planning` alone (no torch,
no transformers).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback

DTYPES = ("auto", "float32", "bfloat16", "float16")
COMMANDS = ("generate", "convert", "inspect", "niah")
# Commands that run without torch and transformers: the module holding their `run_<command>`.
LIGHT_COMMANDS = {"inspect": "transformers_mavors_planning.report"}
# Errors that are the user's input or environment (a missing optional package), not a bug: one line, no
# traceback (`--debug` shows it). `transformers_mavors.cli.USER_ERRORS` adds the package's own.
PLAIN_USER_ERRORS = (OSError, ValueError, TypeError, ImportError)


def package_version() -> str:
    """The installed distribution's version, read from its metadata (no package import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers-mavors")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from transformers_mavors import __version__

        return __version__


class VersionAction(argparse.Action):
    """`--version`: print the version and exit; the metadata is read only when the flag is given."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"mavors {package_version()}")
        parser.exit()


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


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def compression_threshold(text: str) -> float:
    """A cosine-similarity threshold >= 0 (the range `configuration_mavors.check_token_compression_threshold`
    accepts; the command checks it again through that function)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a cosine-similarity threshold >= 0 (typically 0.7-0.99; above 1 merges nothing), got {text}"
        )
    return value


def add_generate_parser(commands) -> None:
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
    generate.add_argument("--revision", help="Hub revision of --model (branch, tag or commit)")


def add_chat_parser(commands) -> None:
    chat = commands.add_parser(
        "chat", help="encode a video once, then answer questions about it read from stdin (one per line)"
    )
    chat.add_argument("--video", required=True, help="video file")
    chat.add_argument(
        "--model",
        help="checkpoint directory or Hub id (default: the tiny offline demo model of the synthetic domain)",
    )
    chat.add_argument("--fps", type=positive_float, help="sampling rate (default: the processor's)")
    chat.add_argument("--max-chunks", type=positive_int, help="chunk budget before accelerated playback")
    chat.add_argument("--max-new-tokens", type=positive_int, default=128)
    chat.add_argument("--dtype", choices=DTYPES, default="auto")
    chat.add_argument("--trust-remote-code", action="store_true", help="load a checkpoint's own code")


def add_convert_parser(commands) -> None:
    convert = commands.add_parser("convert", help="build a Stage-1-ready checkpoint from SigLIP + Qwen2.5")
    convert.add_argument("--vision", required=True, help="SigLIP checkpoint directory or Hub id")
    convert.add_argument(
        "--text", required=True, help="Qwen2 / Qwen2.5 causal-LM checkpoint directory or Hub id"
    )
    convert.add_argument("--output", required=True, help="directory to create (absent or empty)")
    convert.add_argument("--revision", help="Hub revision of --vision and --text (branch, tag or commit)")
    convert.add_argument("--frames-per-chunk", type=positive_int, default=16)
    convert.add_argument(
        "--ifa-layers", type=non_negative_int, default=3, help="aggregator depth L_inter (0 = none)"
    )
    convert.add_argument("--fps", type=positive_float, help="processor sampling rate")
    convert.add_argument("--max-chunks", type=positive_int, help="processor chunk budget")
    convert.add_argument("--max-slices", type=positive_int, help="most sub-images per image")
    convert.add_argument("--dtype", choices=DTYPES[1:], default="bfloat16")


def add_inspect_parser(commands) -> None:
    inspect = commands.add_parser("inspect", help="show the chunks, positions and tokens a video becomes")
    inspect.add_argument("video", help="video file")
    inspect.add_argument(
        "--model", help="checkpoint directory or Hub id whose processor to use (default: Mavors-7B settings)"
    )
    inspect.add_argument("--revision", help="Hub revision of --model (branch, tag or commit)")
    inspect.add_argument("--fps", type=positive_float)
    inspect.add_argument("--max-chunks", type=positive_int)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_niah_parser(commands) -> None:
    niah = commands.add_parser("niah", help="chunk-level needle-in-a-haystack evaluation of a checkpoint")
    niah.add_argument("--model", required=True, help="checkpoint directory or Hub id")
    niah.add_argument("--revision", help="Hub revision of --model (branch, tag or commit)")
    niah.add_argument("--haystack", help="haystack video file (default: the synthetic drifting-square video)")
    niah.add_argument(
        "--chunks", type=positive_int, nargs="+", default=[2, 4, 8, 16, 32], help="video lengths c_V to test"
    )
    niah.add_argument(
        "--frames", type=non_negative_int, nargs="+", help="needle frames within its chunk (default: all)"
    )
    niah.add_argument("--question", help="the question (default: 'What colour is the flash?')")
    niah.add_argument("--batch-size", type=positive_int, default=16)
    niah.add_argument("--json", help="write the per-cell accuracies and every answer to this file")
    niah.add_argument("--plot", help="write the c_V x chunk heatmap to this PNG file")
    niah.add_argument("--trust-remote-code", action="store_true", help="load a checkpoint's own code")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mavors", description="Mavors video/image language models.")
    parser.add_argument("--version", action=VersionAction, help="show the installed version and exit")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (or set MAVORS_DEBUG=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate_parser(commands)
    add_chat_parser(commands)
    add_convert_parser(commands)
    add_inspect_parser(commands)
    add_niah_parser(commands)
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage rules argparse cannot state, checked before anything heavy loads."""
    if args.command == "generate" and args.video is None and args.image is None:
        parser.error("generate: one of --video or --image is required")


def check_offline_hub_ids(args: argparse.Namespace) -> None:
    """In offline mode (`HF_HUB_OFFLINE=1`), a Hub id missing from the cache fails here, in a second, instead of
    after torch and transformers are imported. Online ids, local paths and cached ids are left to the command."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    for flag in ("model", "vision", "text"):
        name = getattr(args, flag, None)
        if name is None or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1:
            continue
        try:
            snapshot_download(name, revision=getattr(args, "revision", None), local_files_only=True)
        except (LocalEntryNotFoundError, HFValidationError):
            raise FileNotFoundError(
                f"checkpoint {name!r} (--{flag}) is not a local directory and not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}); offline mode (HF_HUB_OFFLINE=1) forbids downloading it"
            ) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    debug = args.debug or os.environ.get("MAVORS_DEBUG", "") not in ("", "0")
    try:
        check_offline_hub_ids(args)
    except FileNotFoundError as error:
        return report_error(args.command, f"error: {error}", debug, status=1)
    command, user_errors = load_command(args.command)
    try:
        return command(args)
    except KeyboardInterrupt:
        return report_error(args.command, "interrupted", debug, status=130)
    except user_errors as error:
        return report_error(args.command, f"error: {error}", debug, status=getattr(error, "exit_status", 1))


def load_command(name: str) -> tuple:
    """`(run_<name>, the errors it reports in one line)`: from `LIGHT_COMMANDS` without heavy imports, else from
    `transformers_mavors.cli`, which imports torch and transformers and registers the Auto classes."""
    if name in LIGHT_COMMANDS:
        module = importlib.import_module(LIGHT_COMMANDS[name])
        return getattr(module, f"run_{name}"), PLAIN_USER_ERRORS
    from transformers_mavors import cli

    return getattr(cli, f"run_{name}"), cli.USER_ERRORS


def report_error(command: str, message: str, debug: bool, status: int) -> int:
    """One line on stderr (the traceback first with `--debug` / `MAVORS_DEBUG=1`); returns the exit status."""
    if debug:
        traceback.print_exc()
    print(f"mavors {command}: " + " ".join(message.split()), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
