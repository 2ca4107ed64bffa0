"""Evaluating a Mavors checkpoint (see `docs/evaluation.md`).

- `niah`: the chunk-level needle-in-a-haystack evaluation (paper appendix D) for any Mavors checkpoint.
- `lmms_eval`: the `mavors` model for lmms-eval (the paper's evaluation framework), registered through the
  `lmms_eval.models` entry point; imported only when lmms-eval is installed and asks for it.
- `tasks`: offline lmms-eval tasks over generated synthetic videos (`python -m transformers_mavors.evaluation.tasks`).
"""
