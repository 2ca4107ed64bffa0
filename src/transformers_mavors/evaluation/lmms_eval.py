"""The `mavors` model for lmms-eval, the evaluation framework of the paper (§5.2), for any Mavors checkpoint.

```bash
python -m lmms_eval --model mavors --model_args pretrained=PATH_OR_HUB_ID,fps=4,max_chunks=60 --tasks videomme
```

lmms-eval finds the class through the `lmms_eval.models` entry point of this package (`lmms_eval_models` in
`transformers_mavors.evaluation`). Requests become chat messages, the task's visuals first (videos as file paths,
images as PIL images or paths, several per document) and the task's prompt last, run through the processor's chat
template with the generation prompt, exactly as the `video-text-to-text` pipeline does:

- `generate_until`: left-padded batches of `batch_size` requests (same generation kwargs), greedy by default with
  `max_new_tokens` 1,024 (the paper's protocol) unless the task sets its own; the text stops at the first `until`.
- `loglikelihood`: for each continuation (tokenized on its own, exactly as lmms-eval passes it) the pair
  `(-log p(continuation | prompt), greedy)`: the negative log-likelihood summed over its tokens, because lmms-eval
  0.7.3 picks the choice with the *smallest* value (its own models return a loss), and whether greedy decoding
  would produce it. The choices of one document share one forward of the prompt (its key/value cache), so each
  video is encoded once. `score_continuations` gives the log-probabilities themselves.
- `generate_until_multi_round`: one conversation per document; every round's answer stays in context.

Processor knobs (`fps`, `max_chunks`, `max_slices`, `max_image_pixels`) and `token_compression_threshold` are
model args; see `docs/evaluation.md`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

from ..pipelines import encode_videos_first

logger = logging.get_logger(__name__)

# The paper's protocol (§5.2): greedy decoding, at most 1,024 new tokens.
DEFAULT_MAX_NEW_TOKENS = 1024
PROCESSOR_OPTIONS = ("fps", "max_chunks", "max_slices", "max_image_pixels")
# generation kwargs of lmms-eval tasks that reach `generate`; `until` and `temperature` are translated
GENERATE_OPTIONS = ("max_new_tokens", "do_sample", "top_p", "top_k", "num_beams", "repetition_penalty")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class MediaError(FileNotFoundError):
    """A document's visual could not be found or understood; the message names the task and document."""


def keep_loglikelihood_pairs() -> bool:
    """Work around lmms-eval 0.7.3 turning `loglikelihood` results into strings.

    Its evaluator passes every model output through `unwrap_generation_output` (`lmms_eval/api/instance.py`), which
    returns `str(output)` for a `(float, bool)` pair, so multiple-choice metrics compare strings of tuples. When the
    installed evaluator still does that, wrap it so such pairs pass through unchanged; other outputs are untouched.
    Returns whether the wrapper was installed.
    """
    import lmms_eval.evaluator as evaluator

    unwrap = evaluator.unwrap_generation_output
    if getattr(unwrap, "keeps_loglikelihood_pairs", False) or unwrap((-1.0, True))[0] == (-1.0, True):
        return False

    def unwrap_keeping_pairs(output):
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], bool):
            if isinstance(output[0], float):
                return output, None
        return unwrap(output)

    unwrap_keeping_pairs.keeps_loglikelihood_pairs = True
    evaluator.unwrap_generation_output = unwrap_keeping_pairs
    return True


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def _dtype(name):
    if name in (None, "auto"):
        return "auto"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return dtype


def truncate_at_stop(text: str, until) -> str:
    """`text` up to (not including) the earliest of the `until` strings."""
    cut = len(text)
    for stop in until:
        if stop:
            found = text.find(stop)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


@register_model("mavors")
class Mavors(lmms):
    """lmms-eval model for Mavors checkpoints (a Hub id or a directory, loaded through the Auto classes)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        fps: float | None = None,
        max_chunks: int | None = None,
        max_slices: int | None = None,
        max_image_pixels: int | None = None,
        token_compression_threshold: float | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool | str = False,
        system_prompt: str | None = None,
        progress: bool | str = True,
        max_batch_size: int | None = None,  # lmms-eval's --max_batch_size (automatic batch sizes): unused
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(
                f"unknown mavors model_args {sorted(kwargs)}; see docs/evaluation.md for the arguments"
            )
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        self.batch_size_per_gpu = int(batch_size)
        keep_loglikelihood_pairs()
        trust_remote_code = _as_bool(trust_remote_code)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        options = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
        if attn_implementation:
            options["attn_implementation"] = attn_implementation
        self.processor = AutoProcessor.from_pretrained(str(pretrained), trust_remote_code=trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(str(pretrained), **options).to(device).eval()
        check = getattr(self.processor, "check_model_config", None)
        if check is not None:
            check(self.model.config)
        self.max_new_tokens = int(max_new_tokens)
        self.token_compression_threshold = token_compression_threshold
        self.system_prompt = self._resolve_system_prompt(system_prompt) if system_prompt else None
        self.progress = _as_bool(progress)
        given = {
            "fps": fps,
            "max_chunks": max_chunks,
            "max_slices": max_slices,
            "max_image_pixels": max_image_pixels,
        }
        self.processor_kwargs = {name: value for name, value in given.items() if value is not None}

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- building inputs -------------------------------------------------------------------------------------

    def _document(self, task: str, split: str, doc_id):
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError) as error:
            raise MediaError(f"task {task!r} has no document {doc_id!r} in split {split!r}") from error

    def _media_blocks(self, visuals, task: str, doc_id) -> list[dict]:
        """Chat content blocks for a document's visuals: a path is a video (an image by its suffix), a PIL image
        or a frame array as it is; a missing file is an error naming the document."""
        from PIL import Image

        if visuals is None:
            return []
        if not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        blocks = []
        for visual in visuals:
            if isinstance(visual, Image.Image):
                blocks.append({"type": "image", "image": visual})
            elif isinstance(visual, (str, os.PathLike)):
                path = Path(visual)
                if not path.is_file():
                    raise MediaError(
                        f"task {task!r} document {doc_id!r}: media file {str(path)!r} does not exist"
                    )
                kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
                blocks.append({"type": kind, kind: str(path)})
            elif hasattr(visual, "shape") and len(visual.shape) == 4:
                blocks.append({"type": "video", "video": visual})
            else:
                raise MediaError(
                    f"task {task!r} document {doc_id!r}: cannot use a visual of type {type(visual).__name__} "
                    "(give video paths, image paths, PIL images or (T, H, W, C) frame arrays)"
                )
        return blocks

    def _visual_blocks(self, doc_to_visual, task: str, split: str, doc_id) -> list[dict]:
        document = self._document(task, split, doc_id)
        try:
            visuals = doc_to_visual(document) if callable(doc_to_visual) else doc_to_visual
        except (OSError, KeyError, ValueError) as error:
            raise MediaError(
                f"task {task!r} document {doc_id!r}: could not get its visuals: {error}"
            ) from error
        return self._media_blocks(visuals, task, doc_id)

    def _user_turn(self, blocks: list[dict], context: str) -> dict:
        return {"role": "user", "content": [*blocks, {"type": "text", "text": context}]}

    def _chat(self, turns: list[dict]) -> list[dict]:
        return self._apply_system_prompt(list(turns), self.system_prompt)

    def _encode(self, chats: list[list[dict]], where: str):
        """Processor inputs for chats with the generation prompt (left padding), as the pipeline builds them."""
        processor_kwargs = {**self.processor_kwargs, "padding": True, "padding_side": "left"}
        try:
            inputs = self.processor.apply_chat_template(
                chats,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs=processor_kwargs,
            )
        except (OSError, ValueError) as error:
            raise MediaError(f"{where}: could not build its inputs (media or prompt): {error}") from error
        inputs = inputs.to(self.device).to(dtype=self.model.dtype)
        inputs, _ = encode_videos_first(self.model, self.processor, inputs, self.token_compression_threshold)
        return inputs

    # ---- generation ------------------------------------------------------------------------------------------

    def _generate_kwargs(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        """`generate` kwargs and the stop strings for a task's generation kwargs (greedy unless it samples)."""
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        options = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        options.update(
            {name: gen_kwargs[name] for name in GENERATE_OPTIONS if gen_kwargs.get(name) is not None}
        )
        temperature = float(gen_kwargs.get("temperature") or 0)
        # sampling only when the task asks for a positive temperature (and does not turn sampling off)
        options["do_sample"] = temperature > 0 and gen_kwargs.get("do_sample") is not False
        if options["do_sample"]:
            options["temperature"] = temperature
        options["max_new_tokens"] = int(options["max_new_tokens"])
        return options, until

    def _generate(self, chats: list[list[dict]], gen_kwargs: dict, where: str) -> list[str]:
        options, until = self._generate_kwargs(gen_kwargs)
        inputs = self._encode(chats, where)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        texts = self.processor.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [truncate_at_stop(text, until) for text in texts]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)  # requests with the same generation kwargs share batches
        for index, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)
        progress = tqdm(total=len(requests), desc="Mavors generate_until", disable=not self.progress)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                chats = []
                for index in batch:
                    context, _, doc_to_visual, doc_id, task, split = requests[index].args
                    blocks = self._visual_blocks(doc_to_visual, task, split, doc_id)
                    chats.append(self._chat([self._user_turn(blocks, context)]))
                where = ", ".join(
                    f"task {requests[i].args[4]!r} document {requests[i].args[3]!r}" for i in batch
                )
                texts = self._generate(chats, requests[batch[0]].args[1], where)
                for index, text in zip(batch, texts, strict=True):
                    results[index] = text
                    self.cache_hook.add_partial("generate_until", requests[index].args[:2], text)
                progress.update(len(batch))
        progress.close()
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """One conversation per document: the first round is the request; the task's `doc_to_text(doc,
        previous_output=..., round_idx=..., previous_round_info=...)` gives each next round's visuals and prompt
        until it signals the end. Returns every round's answer."""
        results = []
        for request in tqdm(requests, desc="Mavors generate_until_multi_round", disable=not self.progress):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            where = f"task {task!r} document {doc_id!r}"
            document = self._document(task, split, doc_id)
            turns = [self._user_turn(self._visual_blocks(doc_to_visual, task, split, doc_id), context)]
            answers, info = [], None
            for round_index in range(1, 1_000):
                answer = self._generate([self._chat(turns)], gen_kwargs, f"{where} round {round_index - 1}")[
                    0
                ]
                answers.append(answer)
                turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
                visuals, context, finished, _, info = doc_to_text(
                    document, previous_output=list(answers), round_idx=round_index, previous_round_info=info
                )
                if finished:
                    break
                turns.append(self._user_turn(self._media_blocks(visuals, task, doc_id), context))
            results.append(answers)
        return results

    # ---- scoring ---------------------------------------------------------------------------------------------

    def _continuation_ids(self, continuation: str) -> torch.Tensor:
        ids = self.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def score_continuations(
        self, chat: list[dict], continuations: list[str], where: str
    ) -> list[tuple[float, bool]]:
        """`(log p(continuation | chat with the generation prompt), greedy)` for each continuation.

        The prompt (media included) runs through the model once; each continuation then runs on the prompt's
        key/value cache, which is cropped back to the prompt afterwards.
        """
        inputs = self._encode([chat], where)
        prompt_length = inputs["input_ids"].shape[1]
        scores = []
        with torch.inference_mode():
            prompt = self.model(**inputs, use_cache=True, logits_to_keep=1)
            cache, first_logits = prompt.past_key_values, prompt.logits[0, -1:]
            for continuation in continuations:
                ids = self._continuation_ids(continuation)
                if len(ids) == 0:
                    scores.append((0.0, True))
                    continue
                logits = first_logits
                if len(ids) > 1:
                    rest = self.model(input_ids=ids[None, :-1], past_key_values=cache, use_cache=True)
                    logits = torch.cat([first_logits, rest.logits[0]])
                    cache.crop(
                        prompt_length - cache.get_seq_length()
                    )  # back to the prompt (a negative count)
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                total = float(log_probs.gather(-1, ids[:, None]).sum())
                scores.append((total, bool((logits.argmax(-1) == ids).all())))
        return scores

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        documents = defaultdict(list)  # the choices of one document share its prompt's forward
        for index, request in enumerate(requests):
            context, _, _, doc_id, task, split = request.args
            documents[(task, split, doc_id, context)].append(index)
        progress = tqdm(total=len(requests), desc="Mavors loglikelihood", disable=not self.progress)
        for (task, split, doc_id, context), indices in documents.items():
            doc_to_visual = requests[indices[0]].args[2]
            blocks = self._visual_blocks(doc_to_visual, task, split, doc_id)
            chat = self._chat([self._user_turn(blocks, context)])
            continuations = [requests[index].args[1] for index in indices]
            scores = self.score_continuations(chat, continuations, f"task {task!r} document {doc_id!r}")
            for index, (log_prob, greedy) in zip(indices, scores, strict=True):
                # lmms-eval ranks choices by the smallest first value (a loss), so hand it -log p
                results[index] = (-log_prob, greedy)
                self.cache_hook.add_partial("loglikelihood", requests[index].args[:2], results[index])
            progress.update(len(indices))
        progress.close()
        return results


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MediaError", "Mavors", "keep_loglikelihood_pairs", "truncate_at_stop"]
