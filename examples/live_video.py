"""Questions about a live video: a camera-like source feeds a session, a question is asked every few seconds.

    python examples/live_video.py --model path/to/mavors --video clip.mp4 --every 4 --question "What just happened?"

The "camera" is a video file played back in real time (`--speed` plays it faster): a capture thread decodes it,
waits until each frame's time has come and appends it with its timestamp, as a webcam callback would. The main
thread asks the question every `--every` seconds of video. Each chunk of frames is encoded once, when it
completes; an answer costs the question's tokens plus the pending partial chunk, whatever the video's length.
Without `--model` a tiny random model is built (answers are meaningless; the calls are the same), and without
`--video` a sample clip is generated.
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import transformers_mavors  # noqa: F401  (registers Mavors)
from transformers_mavors import MavorsVideoSession
from transformers_mavors.media_io import VideoReader
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
    tiny_mavors_config,
    tiny_processor,
    write_sample_video,
)


def tiny_checkpoint(directory: Path) -> Path:
    tokenizer = build_tiny_tokenizer()
    model = transformers_mavors.MavorsForConditionalGeneration(tiny_mavors_config(tokenizer))
    model.save_pretrained(directory)
    tiny_processor(tokenizer).save_pretrained(directory)
    return directory


def play(path: str, session: MavorsVideoSession, speed: float, clock: dict) -> None:
    """Append every frame of `path` to `session` when its time comes (a camera delivering frames)."""
    start = time.monotonic()
    with VideoReader(path) as reader:
        for frame in reader.frames():
            stamp = float(frame.time or 0.0)
            delay = start + stamp / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            session.append(reader.to_rgb(frame), timestamps=[stamp])  # waits while an answer is generated
            clock["video_time"] = stamp
    clock["done"] = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Mavors checkpoint (default: a tiny random one)")
    parser.add_argument("--video", help="the file played as a camera (default: a generated clip)")
    parser.add_argument("--fps", type=float, default=4.0, help="frames per second the session samples")
    parser.add_argument("--every", type=float, default=3.0, help="seconds of video between questions")
    parser.add_argument("--question", default="Describe what is happening now.")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed (1 = real time)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mavors-live-"))
    model_dir = args.model or tiny_checkpoint(workdir / "tiny")
    video = args.video or str(write_sample_video(workdir / "camera.mp4", num_frames=96, fps=8))
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="auto").eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    session = MavorsVideoSession(model, processor, fps=args.fps)

    clock = {"video_time": 0.0, "done": False}
    camera = threading.Thread(target=play, args=(video, session, args.speed, clock), daemon=True)
    camera.start()
    next_question = args.every
    with torch.inference_mode():
        while True:
            finished = clock["done"]
            if clock["video_time"] >= next_question or (finished and session.num_frames):
                started = time.perf_counter()
                answer = session.ask(args.question, max_new_tokens=args.max_new_tokens, do_sample=False)
                print(
                    f"[{clock['video_time']:6.2f} s of video, {session.num_chunks} chunks cached, answered in "
                    f"{time.perf_counter() - started:.2f} s] {answer}",
                    flush=True,
                )
                next_question += args.every
            if finished:
                break
            time.sleep(0.02)
    camera.join()


if __name__ == "__main__":
    main()
