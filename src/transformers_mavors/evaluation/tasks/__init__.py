"""Offline lmms-eval tasks over generated synthetic videos, so the whole evaluation path runs without the Hub.

`write_tasks(out)` (or `python -m transformers_mavors.evaluation.tasks OUT`) draws seeded scenes of
`transformers_mavors.synthetic`, writes them as MP4 files with one JSONL per question set, and writes three task
YAML files next to them (with `utils.py`, their prompt and scoring functions); run them with
`python -m lmms_eval --include_path OUT --tasks mavors_synthetic ...`:

- `mavors_synthetic_mc`: multiple choice in the Video-MME style (lettered options, a letter answer, generated).
- `mavors_synthetic_mc_ll`: the same questions scored through `loglikelihood` (lmms-eval's `multiple_choice`):
  the plain question, each option's text as the continuation, accuracy of the most likely option.
- `mavors_synthetic_caption`: "Describe the video.", exact match with the reference caption.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from ...synthetic.data import HELDOUT_SEED_OFFSET
from ...synthetic.scenes import COLOURS, DIRECTIONS, NUMBERS, make_scene, write_video

GROUP = "mavors_synthetic"
TASK_NAMES = ("mavors_synthetic_mc", "mavors_synthetic_mc_ll", "mavors_synthetic_caption")
# the options of each multiple-choice question type, in a fixed order (the answer's letter is its index)
CHOICES = {"motion": list(DIRECTIONS), "order": list(COLOURS), "count": list(NUMBERS[1:])}
SEED_OFFSET = HELDOUT_SEED_OFFSET + 500_000  # scenes neither the demo's training nor its held-out split used

_COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_visual: !function utils.doc_to_visual
"""

_TASKS = {
    "mavors_synthetic_mc": """task: mavors_synthetic_mc
tag: mavors_synthetic
{common}output_type: generate_until
doc_to_text: !function utils.mc_doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 16
  temperature: 0
  do_sample: false
process_results: !function utils.mc_process_results
metric_list:
  - metric: mc_accuracy
    aggregation: mean
    higher_is_better: true
""",
    "mavors_synthetic_mc_ll": """task: mavors_synthetic_mc_ll
tag: mavors_synthetic
{common}output_type: multiple_choice
doc_to_text: !function utils.question_doc_to_text
doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_target_index
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "mavors_synthetic_caption": """task: mavors_synthetic_caption
tag: mavors_synthetic
{common}output_type: generate_until
doc_to_text: !function utils.question_doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 24
  temperature: 0
  do_sample: false
process_results: !function utils.caption_process_results
metric_list:
  - metric: caption_exact_match
    aggregation: mean
    higher_is_better: true
""",
}


def _scene_doc(task: str, seed: int, video: Path) -> dict:
    scene = make_scene(task, seed)
    if not video.exists():
        write_video(scene.frames, video)
    doc = {"id": f"{task}_{seed}", "kind": task, "video": str(video.resolve()), "question": scene.prompt}
    if task in CHOICES:
        choices = CHOICES[task]
        doc.update(choices=choices, answer="ABCD"[choices.index(scene.answer)], answer_text=scene.answer)
    else:
        doc["answer"] = scene.answer
    return doc


def write_jsonl(records: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_tasks(out: str | os.PathLike, per_kind: int = 2, captions: int = 3, progress: bool = True) -> dict:
    """Write the offline tasks under `out` (videos, `mc.jsonl`, `caption.jsonl`, the YAML files, `utils.py`).

    `per_kind` multiple-choice questions of each kind (motion, order, count) and `captions` caption questions.
    Returns `{"mc": [docs], "caption": [docs], "include_path": out}`. Rerunning reuses the videos.
    """
    out = Path(out).resolve()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [(kind, SEED_OFFSET + i) for kind in CHOICES for i in range(per_kind)]
    jobs += [("caption", SEED_OFFSET + i) for i in range(captions)]
    docs = {"mc": [], "caption": []}
    for kind, seed in tqdm(jobs, desc="writing task videos", disable=not progress):
        doc = _scene_doc(kind, seed, out / "videos" / f"{kind}_{seed}.mp4")
        docs["caption" if kind == "caption" else "mc"].append(doc)
    write_jsonl(docs["mc"], out / "mc.jsonl")
    write_jsonl(docs["caption"], out / "caption.jsonl")
    for name, template in _TASKS.items():
        data = out / ("caption.jsonl" if name.endswith("caption") else "mc.jsonl")
        (out / f"{name}.yaml").write_text(template.format(common=_COMMON.format(data=json.dumps(str(data)))))
    shutil.copyfile(Path(__file__).with_name("utils.py"), out / "utils.py")
    return {**docs, "include_path": out}


__all__ = ["CHOICES", "GROUP", "TASK_NAMES", "write_jsonl", "write_tasks"]
