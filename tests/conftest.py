"""Shared fixtures: tiny configs, a local tokenizer, seeded random models and packed inputs."""

import shutil
import subprocess
import sys

import pytest
import torch
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from transformers_mavors import MavorsForConditionalGeneration, num_visual_tokens
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
    tiny_mavors_config,
    tiny_processor,
    tiny_text_config,
    tiny_vision_config,
    write_sample_video,
)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def vision_config():
    return tiny_vision_config()


@pytest.fixture
def config(tokenizer):
    return tiny_mavors_config(tokenizer)


def mavors(*args, timeout=300) -> subprocess.CompletedProcess:
    """Run the `mavors` console script's entry point in a fresh interpreter, as a user would."""
    code = "import sys; from transformers_mavors_cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Fill every parameter with seeded noise (fresh aggregators are the identity by design; tests need more)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)
    return module


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return randomize_(MavorsForConditionalGeneration(config)).eval()


def pack_frames(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Reference packing of `(T, C, H, W)` frames, T = 1 (image) or F (one chunk), into `(h*w, C*T*p*p)` rows.

    Row-major over the patch grid, values in (C, T, p, p) order, as SPEC §7 and the model docstring state.
    """
    t, c, height, width = frames.shape
    h, w = height // patch_size, width // patch_size
    patches = frames.reshape(t, c, h, patch_size, w, patch_size)
    return patches.permute(2, 4, 1, 0, 3, 5).reshape(h * w, c * t * patch_size * patch_size)


def video_inputs(
    num_chunks: int, h: int, w: int, frames_per_chunk: int = 4, patch_size: int = 14, seed: int = 0
):
    """Random packed video: `(pixel_values_videos, video_grid_thw)` for one video of `num_chunks` chunks."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(num_chunks * h * w, 3 * frames_per_chunk * patch_size**2, generator=generator)
    return rows, torch.tensor([[num_chunks, h, w]])


def image_inputs(grids: list[tuple[int, int]], patch_size: int = 14, seed: int = 0):
    """Random packed image pieces of the given `(h, w)` patch grids."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(sum(h * w for h, w in grids), 3 * patch_size**2, generator=generator)
    return rows, torch.tensor([[1, h, w] for h, w in grids])


def prompt_ids(config, tokenizer, text_before: str, token_id: int, count: int, text_after: str) -> list[int]:
    """Token ids of `text_before <|vision_start|> placeholder*count <|vision_end|> text_after`."""
    start, end = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    before = tokenizer(text_before)["input_ids"]
    after = tokenizer(text_after)["input_ids"]
    return before + [start] + [token_id] * count + [end] + after


def tokens_for(grid_thw: torch.Tensor) -> int:
    return sum(num_visual_tokens(row) for row in grid_thw.tolist())


# ---- sample media and a tiny saved Mavors checkpoint ----


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory):
    """`sample_video(num_frames, fps=8) -> str`: the path of `write_sample_video`'s clip of that length, written
    once per session (tests only read it)."""
    written = {}

    def make(num_frames: int, fps: int = 8) -> str:
        if (num_frames, fps) not in written:
            path = tmp_path_factory.mktemp("media") / f"clip_{num_frames}f_{fps}fps.mp4"
            written[num_frames, fps] = str(write_sample_video(path, num_frames=num_frames, fps=fps))
        return written[num_frames, fps]

    return make


def save_tiny_checkpoint(path, tokenizer, seed: int = 0, std: float = 0.1):
    """A seeded random tiny Mavors model and its `tiny_processor`, saved to `path`."""
    torch.manual_seed(seed)
    randomize_(MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)), std=std).save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny saved checkpoint (model + processor), one per test module."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), tokenizer)


# ---- tiny pretrained checkpoints saved by the tests (SigLIP vision, full SigLIP, Qwen2 + tokenizer) ----

# the SigLIP twin of tiny_vision_config(), so Mavors built from it matches the tiny test models
SIGLIP_KWARGS = {
    name: getattr(tiny_vision_config(), name)
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
    )
}


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    model = randomize_(SiglipVisionModel(SiglipVisionConfig(**SIGLIP_KWARGS)), std=0.05)
    model.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 56, "width": 56}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def siglip_full_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("siglip_full")
    config = SiglipConfig(
        vision_config=SIGLIP_KWARGS,
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=100
        ),
    )
    torch.manual_seed(1)
    randomize_(SiglipModel(config), std=0.05).save_pretrained(path)
    return path


def save_qwen(path, tokenizer, seed=0):
    text = tiny_text_config(vocab_size=len(tokenizer) + (-len(tokenizer)) % 8)
    text.pop("model_type")
    torch.manual_seed(seed)
    model = randomize_(Qwen2ForCausalLM(Qwen2Config(**text)), seed=seed, std=0.05)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen")
    save_qwen(path, build_tiny_tokenizer())
    return path


# ---- a real Hugging Face cache layout (HF_HUB_CACHE) holding the tiny checkpoints under Hub ids ----

HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hf_cache(cache, repo_id: str, source) -> None:
    """Put `source`'s files where huggingface_hub keeps a downloaded snapshot of `repo_id` at `HUB_REVISION`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / HUB_REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(HUB_REVISION)


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, tokenizer, siglip_dir, qwen_dir):
    """A folder with `ckpt/` (a tiny Mavors checkpoint), `clip.mp4`, and `cache/`: an HF cache holding that
    checkpoint as `org/name`, the tiny SigLIP as `google/siglip-tiny` and the tiny Qwen2 as `Qwen/Qwen2-tiny`."""
    root = tmp_path_factory.mktemp("hub")
    save_tiny_checkpoint(root / "ckpt", tokenizer)
    cache = root / "cache"
    lay_out_hf_cache(cache, "org/name", root / "ckpt")
    lay_out_hf_cache(cache, "google/siglip-tiny", siglip_dir)
    lay_out_hf_cache(cache, "Qwen/Qwen2-tiny", qwen_dir)
    write_sample_video(root / "clip.mp4", num_frames=8, fps=8)
    return root
