"""Procedural videos of coloured shapes, each with the question and answer that only its rendering can settle.

Every video is a list of chunks of `FRAMES_PER_CHUNK` frames, drawn on a static, noisy mid-grey background
(zero-mean pixels after normalisation; see docs/learning.md for why that matters). The
tasks need the two granularities Mavors encodes separately:

| task | what happens | question | answers (chance) |
|---|---|---|---|
| `motion` | in every chunk a square restarts somewhere and moves one way | which way does it move? | 4 directions (1/4) |
| `order` | three colours each show in one chunk | which colour appears first? | the 3 shown (1/3) |
| `count` | a white circle flashes in k non-adjacent chunks | how many times? | one..four (1/4) |
| `caption` | a square moves one way, then a square of another colour another way | describe the video | 4*4*3*4 (1/192) |
| `needle` | a dark square drifts; one frame is flooded with a colour | what colour is the flash? | 4 colours (1/4) |

`motion` restarts the square in every chunk, so the direction is visible only *within* a chunk; `order` and
`count` show each shape in a single chunk, so the answer lies only *across* chunks. Everything is seeded: the
same `(task, seed)` always draws the same video and answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAMES_PER_CHUNK = 4  # the tiny demo model's chunk length (the paper's is 16)
FPS = 4  # videos are written at the processor's default sampling rate, so every frame is kept
SIZE = 56  # frames are SIZE x SIZE pixels: the tiny model's R_v, a 4 x 4 patch grid at patch size 14

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
}
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
NUMBERS = ("zero", "one", "two", "three", "four")
WHITE = (235, 235, 235)
DARK = (40, 40, 40)

PROMPTS = {
    "motion": "Which way does the square move?",
    "order": "Which colour appears first?",
    "count": "How many times does the circle appear?",
    "caption": "Describe the video.",
    "needle": "What colour is the flash?",
}
TASKS = tuple(PROMPTS)
# the best accuracy without looking at the video; count: k is uniform in 1..min(4, (chunks + 1) // 2) over 4-8
# chunks, so "one" (like "two") is right a third of the time
CHANCE = {"motion": 1 / 4, "order": 1 / 3, "count": 1 / 3, "caption": 1 / 192, "needle": 1 / 4}

SQUARE = 14  # side of a square, in pixels
BACKGROUND = 128  # mid-grey: the normalised pixels of an empty frame are near zero
TEXTURE = 16  # the background's pixel values lie in [BACKGROUND - TEXTURE / 2, BACKGROUND + TEXTURE / 2)
STEP = 5  # pixels a moving square travels per frame


@dataclass
class Scene:
    """One synthetic video (frames at `FPS`) with its question and reference answer."""

    task: str
    frames: np.ndarray  # (T, SIZE, SIZE, 3) uint8
    answer: str
    facts: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return PROMPTS[self.task]

    @property
    def num_chunks(self) -> int:
        return len(self.frames) // FRAMES_PER_CHUNK


def caption_text(colour_a: str, direction_a: str, colour_b: str, direction_b: str) -> str:
    return f"A {colour_a} square moves {direction_a}, then a {colour_b} square moves {direction_b}."


def background(rng: np.random.Generator, num_frames: int, size: int = SIZE) -> np.ndarray:
    """A static mid-grey texture repeated over `num_frames` frames."""
    low = BACKGROUND - TEXTURE // 2
    texture = rng.integers(low, low + TEXTURE, size=(size, size, 3), dtype=np.uint8)
    return np.repeat(texture[None], num_frames, axis=0)


def draw_square(frame: np.ndarray, top: int, left: int, colour, side: int = SQUARE) -> None:
    frame[max(top, 0) : top + side, max(left, 0) : left + side] = colour


def draw_circle(frame: np.ndarray, centre_y: int, centre_x: int, colour, radius: int = 7) -> None:
    y, x = np.ogrid[: frame.shape[0], : frame.shape[1]]
    frame[(y - centre_y) ** 2 + (x - centre_x) ** 2 <= radius**2] = colour


def _moving_square(frames: np.ndarray, chunk: int, rng: np.random.Generator, colour, direction: str) -> None:
    """Draw a square that starts at a random spot of `chunk` and moves `STEP` pixels a frame towards `direction`."""
    dy, dx = DIRECTIONS[direction]
    travel = STEP * (FRAMES_PER_CHUNK - 1)
    low, high = 0, SIZE - SQUARE
    top = int(rng.integers(low + (travel if dy < 0 else 0), high - (travel if dy > 0 else 0) + 1))
    left = int(rng.integers(low + (travel if dx < 0 else 0), high - (travel if dx > 0 else 0) + 1))
    for f in range(FRAMES_PER_CHUNK):
        draw_square(frames[chunk * FRAMES_PER_CHUNK + f], top + dy * STEP * f, left + dx * STEP * f, colour)


def _still_square(frames: np.ndarray, chunk: int, rng: np.random.Generator, colour) -> None:
    top, left = (int(v) for v in rng.integers(0, SIZE - SQUARE + 1, size=2))
    for f in range(FRAMES_PER_CHUNK):
        draw_square(frames[chunk * FRAMES_PER_CHUNK + f], top, left, colour)


def _spread_chunks(rng: np.random.Generator, num_chunks: int, count: int, gap: int) -> list[int]:
    """`count` sorted chunk indices in `[0, num_chunks)`, at least `gap` apart."""
    slack = num_chunks - (count - 1) * gap - 1
    offsets = np.sort(rng.integers(0, slack + 1, size=count))
    return [int(offset) + i * gap for i, offset in enumerate(offsets)]


def motion_scene(rng: np.random.Generator, num_chunks: int | None = None) -> Scene:
    num_chunks = num_chunks or int(rng.integers(2, 5))
    colour = str(rng.choice(list(COLOURS)))
    direction = str(rng.choice(list(DIRECTIONS)))
    frames = background(rng, num_chunks * FRAMES_PER_CHUNK)
    for chunk in range(num_chunks):
        _moving_square(frames, chunk, rng, COLOURS[colour], direction)
    return Scene("motion", frames, direction, {"colour": colour, "direction": direction})


def order_scene(rng: np.random.Generator, num_chunks: int | None = None) -> Scene:
    num_chunks = num_chunks or int(rng.integers(3, 9))
    colours = [str(c) for c in rng.choice(list(COLOURS), size=3, replace=False)]
    chunks = _spread_chunks(rng, num_chunks, 3, gap=1)
    frames = background(rng, num_chunks * FRAMES_PER_CHUNK)
    for colour, chunk in zip(colours, chunks, strict=True):
        _still_square(frames, chunk, rng, COLOURS[colour])
    return Scene("order", frames, colours[0], {"colours": colours, "chunks": chunks})


def count_scene(rng: np.random.Generator, num_chunks: int | None = None) -> Scene:
    num_chunks = num_chunks or int(rng.integers(4, 9))
    count = int(rng.integers(1, min(4, (num_chunks + 1) // 2) + 1))
    chunks = _spread_chunks(rng, num_chunks, count, gap=2)
    frames = background(rng, num_chunks * FRAMES_PER_CHUNK)
    for chunk in chunks:
        y, x = (int(v) for v in rng.integers(8, SIZE - 8, size=2))
        for f in range(FRAMES_PER_CHUNK):
            draw_circle(frames[chunk * FRAMES_PER_CHUNK + f], y, x, WHITE)
    return Scene("count", frames, NUMBERS[count], {"count": count, "chunks": chunks})


def caption_scene(rng: np.random.Generator, num_chunks: int | None = None) -> Scene:
    num_chunks = num_chunks or int(rng.integers(4, 9))
    first = num_chunks // 2
    colour_a, colour_b = (str(c) for c in rng.choice(list(COLOURS), size=2, replace=False))
    direction_a, direction_b = (str(d) for d in rng.choice(list(DIRECTIONS), size=2))
    frames = background(rng, num_chunks * FRAMES_PER_CHUNK)
    for chunk in range(num_chunks):
        colour, direction = (colour_a, direction_a) if chunk < first else (colour_b, direction_b)
        _moving_square(frames, chunk, rng, COLOURS[colour], direction)
    facts = {"colours": [colour_a, colour_b], "directions": [direction_a, direction_b], "switch": first}
    return Scene("caption", frames, caption_text(colour_a, direction_a, colour_b, direction_b), facts)


def haystack_frames(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """A dark square drifting on the grey texture: a haystack with motion but no colour."""
    frames = background(rng, num_frames)
    y, x = (float(v) for v in rng.integers(0, SIZE - SQUARE + 1, size=2))
    vy, vx = (float(v) for v in rng.uniform(-1.5, 1.5, size=2))
    for t in range(num_frames):
        draw_square(frames[t], int(y), int(x), DARK)
        y, x = y + vy, x + vx
        if not 0 <= y <= SIZE - SQUARE:
            vy, y = -vy, min(max(y, 0), SIZE - SQUARE)
        if not 0 <= x <= SIZE - SQUARE:
            vx, x = -vx, min(max(x, 0), SIZE - SQUARE)
    return frames


def needle_frame(colour: str, like: np.ndarray) -> np.ndarray:
    """The needle: a frame of `like`'s shape flooded with `colour` (a tenth of the frame's own pixels left showing)."""
    flooded = np.empty_like(like)
    flooded[...] = COLOURS[colour]
    return (0.9 * flooded + 0.1 * like).astype(np.uint8)


def needle_scene(rng: np.random.Generator, num_chunks: int | None = None) -> Scene:
    num_chunks = num_chunks or int(rng.integers(2, 9))
    frames = haystack_frames(rng, num_chunks * FRAMES_PER_CHUNK)
    colour = str(rng.choice(list(COLOURS)))
    chunk, frame = int(rng.integers(0, num_chunks)), int(rng.integers(0, FRAMES_PER_CHUNK))
    index = chunk * FRAMES_PER_CHUNK + frame
    frames[index] = needle_frame(colour, frames[index])
    return Scene("needle", frames, colour, {"chunk": chunk, "frame": frame})


SCENES = {
    "motion": motion_scene,
    "order": order_scene,
    "count": count_scene,
    "caption": caption_scene,
    "needle": needle_scene,
}


def make_scene(task: str, seed: int, num_chunks: int | None = None) -> Scene:
    """The scene of `task` drawn from `seed` (`num_chunks` fixes its length; otherwise the task's own range)."""
    if task not in SCENES:
        raise ValueError(f"unknown synthetic task {task!r}; the tasks are {TASKS}")
    rng = np.random.default_rng([TASKS.index(task), seed])
    return SCENES[task](rng, num_chunks)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = FPS) -> Path:
    """Encode frames as an H.264 MP4 with PyAV, near-lossless (crf 12) so colours survive the round trip."""
    from ..media_io import write_video as write_media_video

    return write_media_video(frames, path, fps, options={"crf": "12"})


__all__ = [
    "CHANCE",
    "COLOURS",
    "DIRECTIONS",
    "FPS",
    "FRAMES_PER_CHUNK",
    "NUMBERS",
    "PROMPTS",
    "SIZE",
    "TASKS",
    "Scene",
    "caption_text",
    "haystack_frames",
    "make_scene",
    "needle_frame",
    "write_video",
]
