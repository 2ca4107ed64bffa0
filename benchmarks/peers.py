"""The peer benchmark's entry point: Mavors against transformers' Qwen2.5-VL and VideoLLaMA3 (docs/performance.md).

The benchmark itself is the package `benchmarks/peers/`; `python benchmarks/peers.py --help` prints what it
measures and how.

    python benchmarks/peers.py --quick --json quick.json --plot docs/peers_quick.png   # < 2 min, 2 CPU cores
    python benchmarks/peers.py --json full.json --plot docs/peers_full.png             # 16, 64, 256 frames
    python benchmarks/peers.py --frames 16 64 256 960 --sections peers                 # on a GPU
"""

import sys
from pathlib import Path

# the package `peers/` next to this file (a directory wins over this module's own name on import)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
