"""Chunk-level needle in a haystack (paper appendix D), for any Mavors checkpoint.

A haystack video is fitted to `c_V` chunks by accelerated playback (the processor keeps `c_V * F` of its frames,
spread evenly); the needle, a frame flooded with one colour, replaces the frame that lands at chunk `c`, frame
`f`; the model is asked what colour the flash is. Repeating this over colours and frames for every `(c_V, c)`
gives a heatmap of accuracy against video length and needle depth.

Scoring: an answer is right when it names the needle's colour and no other colour (so a real checkpoint's
"The flash is red." counts, and "red or blue" does not).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..media_io import read_video
from ..synthetic.scenes import COLOURS, PROMPTS, haystack_frames, needle_frame
from ..video_processing_mavors import accelerated_playback_indices

DEFAULT_CHUNK_COUNTS = (2, 4, 8, 16, 32)


def needle_index(num_frames: int, num_chunks: int, chunk: int, frame: int, frames_per_chunk: int) -> int:
    """Which frame of a `num_frames`-frame haystack (at the processor's fps) the processor shows at `chunk`,
    `frame` once it fits the video to `num_chunks` chunks."""
    if not 0 <= chunk < num_chunks:
        raise ValueError(f"needle chunk {chunk} is outside the video's {num_chunks} chunks")
    if not 0 <= frame < frames_per_chunk:
        raise ValueError(f"needle frame {frame} is outside a chunk of {frames_per_chunk} frames")
    kept = accelerated_playback_indices(num_frames, num_chunks * frames_per_chunk)
    if len(kept) < num_chunks * frames_per_chunk:
        raise ValueError(
            f"a haystack of {num_frames} frames cannot fill {num_chunks} chunks of {frames_per_chunk} frames; "
            f"give at least {num_chunks * frames_per_chunk} frames"
        )
    return kept[chunk * frames_per_chunk + frame]


def insert_needle(
    haystack: np.ndarray, colour: str, num_chunks: int, chunk: int, frame: int, frames_per_chunk: int
) -> np.ndarray:
    """A copy of `haystack` (T, H, W, 3) with the `colour` needle where the processor will show chunk/frame."""
    if colour not in COLOURS:
        raise ValueError(f"unknown needle colour {colour!r}; the colours are {tuple(COLOURS)}")
    video = np.array(haystack, copy=True)
    index = needle_index(len(video), num_chunks, chunk, frame, frames_per_chunk)
    video[index] = needle_frame(colour, video[index])
    return video


def read_frames(path: str | os.PathLike, fps: float) -> np.ndarray:
    """Decode a video file to RGB frames at `fps` (the frame on screen at every `k / fps`), as the processor
    samples it before accelerated playback; see `media_io.read_video`."""
    return read_video(path, fps)[0]


def score_answer(answer: str, colour: str) -> bool:
    words = set(re.findall(r"[a-z]+", answer.lower()))
    return colour in words and not (words & set(COLOURS)) - {colour}


@dataclass
class NeedleResult:
    """Accuracy per `(c_V, chunk)` with the trials behind each cell."""

    chunk_counts: list[int]
    accuracy: dict[int, list[float]]  # c_V -> accuracy at chunk 0 .. c_V - 1
    trials: int
    answers: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "chunk_counts": self.chunk_counts,
            "trials_per_cell": self.trials,
            "accuracy": {str(k): v for k, v in self.accuracy.items()},
            "mean_accuracy": {str(k): float(np.mean(v)) for k, v in self.accuracy.items()},
            "answers": self.answers,
        }


def run_needle_in_haystack(
    model,
    processor,
    haystack: np.ndarray | None = None,
    chunk_counts: Sequence[int] = DEFAULT_CHUNK_COUNTS,
    colours: Sequence[str] = tuple(COLOURS),
    frames: Sequence[int] | None = None,
    question: str = PROMPTS["needle"],
    batch_size: int = 16,
    max_new_tokens: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> NeedleResult:
    """Ask about a needle at every chunk of every `c_V` in `chunk_counts`, once per colour x needle frame.

    `haystack` is frames at the processor's fps (default: the synthetic drifting-square haystack, twice as long
    as the largest `c_V` needs, so every length plays accelerated). `frames` are the needle's positions within
    its chunk (default: all).
    """
    video_processor = processor.video_processor
    per_chunk = video_processor.frames_per_chunk
    frames = list(range(per_chunk)) if frames is None else list(frames)
    if haystack is None:
        haystack = haystack_frames(np.random.default_rng(seed), 2 * max(chunk_counts) * per_chunk)
    from ..synthetic.training import greedy_answers

    cases = [
        (num_chunks, chunk, colour, frame)
        for num_chunks in chunk_counts
        for chunk in range(num_chunks)
        for colour in colours
        for frame in frames
    ]
    hits: dict[tuple[int, int], list[bool]] = {}
    answers = []
    for start in tqdm(range(0, len(cases), batch_size), desc="needle in a haystack", disable=not progress):
        batch = cases[start : start + batch_size]
        # one processor call per c_V (the chunk budget is a per-call option)
        for num_chunks in sorted({case[0] for case in batch}):
            group = [case for case in batch if case[0] == num_chunks]
            videos = [
                insert_needle(haystack, colour, num_chunks, chunk, frame, per_chunk)
                for _, chunk, colour, frame in group
            ]
            texts = greedy_answers(
                model, processor, [question] * len(group), videos, max_new_tokens, max_chunks=num_chunks
            )
            for (_, chunk, colour, frame), text in zip(group, texts, strict=True):
                right = score_answer(text, colour)
                hits.setdefault((num_chunks, chunk), []).append(right)
                answers.append(
                    {
                        "chunks": num_chunks,
                        "chunk": chunk,
                        "frame": frame,
                        "colour": colour,
                        "answer": text,
                        "right": right,
                    }
                )
    accuracy = {n: [float(np.mean(hits[(n, c)])) for c in range(n)] for n in chunk_counts}
    return NeedleResult(list(chunk_counts), accuracy, len(colours) * len(frames), answers)


def plot_heatmap(
    result: NeedleResult, path: str | os.PathLike, title: str = "chunk-level needle in a haystack"
) -> Path:
    """Accuracy as a c_V x chunk heatmap (cells past a video's last chunk left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(result.chunk_counts)
    grid = np.full((len(result.chunk_counts), width), np.nan)
    for row, n in enumerate(result.chunk_counts):
        grid[row, :n] = result.accuracy[n]
    figure, axis = plt.subplots(figsize=(max(6, width * 0.28), 1 + 0.5 * len(result.chunk_counts)))
    image = axis.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
    axis.set_yticks(range(len(result.chunk_counts)), [str(n) for n in result.chunk_counts])
    axis.set_ylabel("chunks in the video (c_V)")
    axis.set_xlabel("needle chunk")
    axis.set_title(f"{title} ({result.trials} trials per cell)")
    figure.colorbar(image, ax=axis, label="accuracy")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def save_result(result: NeedleResult, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return path


__all__ = [
    "DEFAULT_CHUNK_COUNTS",
    "NeedleResult",
    "insert_needle",
    "needle_index",
    "plot_heatmap",
    "read_frames",
    "run_needle_in_haystack",
    "save_result",
    "score_answer",
]
