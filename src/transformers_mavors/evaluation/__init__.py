"""Evaluating a Mavors checkpoint (see `docs/evaluation.md`).

- `niah`: the chunk-level needle-in-a-haystack evaluation (paper appendix D) for any Mavors checkpoint.
- `lmms_eval`: the `mavors` model for lmms-eval (the paper's evaluation framework), registered through the
  `lmms_eval.models` entry point; imported only when lmms-eval is installed and asks for it.
- `tasks`: offline lmms-eval tasks over generated synthetic videos (`python -m transformers_mavors.evaluation.tasks`).
"""


def lmms_eval_models():
    """The `lmms_eval.models` entry point: registers `mavors` (`lmms_eval.py`) as an lmms-eval "simple" model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id="mavors", simple_class_path="transformers_mavors.evaluation.lmms_eval.Mavors")
    ]
