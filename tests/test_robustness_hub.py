"""Finding 1 of issue 18: Hub ids work wherever a checkpoint path is accepted, resolved through a real Hugging
Face cache layout (`models--org--name/snapshots/<rev>/`, `refs/main`) with `HF_HUB_OFFLINE=1`, and a missing id
fails in seconds with one line."""

import os
import subprocess
import sys
import textwrap
import time

import pytest


def offline_env(hub_cache) -> dict:
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    return {
        **os.environ,
        "HF_HUB_CACHE": str(hub_cache / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def run_python(code: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "code",
    [
        # the model and processor by id equal the ones saved in the snapshot
        """
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers_mavors import MavorsForConditionalGeneration
        by_id = MavorsForConditionalGeneration.from_pretrained("org/name")
        auto = AutoModelForImageTextToText.from_pretrained("org/name")
        local = MavorsForConditionalGeneration.from_pretrained(LOCAL)
        for (name, a), b, c in zip(by_id.state_dict().items(), auto.state_dict().values(), local.state_dict().values()):
            assert torch.equal(a, c) and torch.equal(b, c), name
        assert AutoProcessor.from_pretrained("org/name").tokenizer.get_vocab() == AutoProcessor.from_pretrained(LOCAL).tokenizer.get_vocab()
        print("OK")
        """,
        # the builders take Hub ids and give what the local directories give
        """
        import torch
        from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor
        torch.manual_seed(0)
        by_id = MavorsForConditionalGeneration.from_vision_text_pretrained("google/siglip-tiny", "Qwen/Qwen2-tiny", frames_per_chunk=4)
        torch.manual_seed(0)
        local = MavorsForConditionalGeneration.from_vision_text_pretrained(SIGLIP, QWEN, frames_per_chunk=4)
        for (name, a), b in zip(by_id.state_dict().items(), local.state_dict().values()):
            assert torch.equal(a, b), name
        processor = MavorsProcessor.from_vision_text_pretrained("google/siglip-tiny", "Qwen/Qwen2-tiny", frames_per_chunk=4, revision="main")
        assert processor.video_processor.frames_per_chunk == 4
        print("OK")
        """,
    ],
    ids=["from_pretrained", "from_vision_text_pretrained"],
)
def test_hub_ids_load_from_the_cache_offline(hub_cache, siglip_dir, qwen_dir, code):
    code = (
        code.replace("LOCAL", repr(str(hub_cache / "ckpt")))
        .replace("SIGLIP", repr(str(siglip_dir)))
        .replace("QWEN", repr(str(qwen_dir)))
    )
    result = run_python(code, offline_env(hub_cache))
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


@pytest.mark.parametrize(
    "call",
    [
        'MavorsForConditionalGeneration.from_vision_text_pretrained("org/missing", "Qwen/Qwen2-tiny")',
        'MavorsProcessor.from_vision_text_pretrained("google/siglip-tiny", "org/missing")',
    ],
)
def test_missing_hub_id_offline_fails_fast_with_one_sentence(hub_cache, call):
    code = f"""
    from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor
    try:
        {call}
    except FileNotFoundError as error:
        print("ERROR", error)
    """
    start = time.monotonic()
    result = run_python(code, offline_env(hub_cache), timeout=60)
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "ERROR" in result.stdout and "'org/missing'" in result.stdout, result.stderr[-2000:]
    assert "HF_HUB_OFFLINE=1" in result.stdout
