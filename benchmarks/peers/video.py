"""The benchmark video: the same generated frames for every model (and for benchmarks/compression.py)."""

from __future__ import annotations

import numpy as np


def benchmark_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames `(T, H, W, 3)` uint8: three shapes moving over a static textured background, plus mild noise.

    The background (smooth colour gradients and a fixed random texture) never moves; a red square, a green disc
    and a blue bar move at different constant speeds and bounce off the borders; every frame gets independent
    Gaussian noise (sigma 3). Deterministic for a given `seed`.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack(
        [
            96 + 60 * np.sin(xx / max(width, 1) * 2 * np.pi),
            96 + 60 * np.cos(yy / max(height, 1) * 3 * np.pi),
            96 + 40 * np.sin((xx + yy) / max(width + height, 1) * 4 * np.pi),
        ],
        axis=-1,
    )
    background += rng.normal(0.0, 12.0, size=background.shape)  # fixed texture
    side = max(2, min(height, width) // 5)
    shapes = [  # (colour, kind, start x, start y, velocity x, velocity y), positions in pixels, speeds per frame
        ((220, 40, 40), "square", 0.1 * width, 0.2 * height, 0.013 * width, 0.009 * height),
        ((40, 200, 60), "disc", 0.7 * width, 0.6 * height, -0.008 * width, 0.015 * height),
        ((50, 70, 230), "bar", 0.4 * width, 0.1 * height, 0.005 * width, -0.011 * height),
    ]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        for colour, kind, x0, y0, vx, vy in shapes:
            x = _bounce(x0 + vx * t, width - side)
            y = _bounce(y0 + vy * t, height - side)
            if kind == "square":
                mask = (xx >= x) & (xx < x + side) & (yy >= y) & (yy < y + side)
            elif kind == "disc":
                mask = (xx - x - side / 2) ** 2 + (yy - y - side / 2) ** 2 < (side / 2) ** 2
            else:
                mask = (xx >= x) & (xx < x + 2 * side) & (yy >= y) & (yy < y + side / 3)
            frame[mask] = colour
        frame += rng.normal(0.0, 3.0, size=frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _bounce(position: float, limit: float) -> float:
    """Reflect a coordinate moving on a line into `[0, limit]`."""
    if limit <= 0:
        return 0.0
    period = position % (2 * limit)
    return period if period <= limit else 2 * limit - period
