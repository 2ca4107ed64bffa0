"""Prompt, visual and scoring functions of the offline synthetic lmms-eval tasks (`!function utils.*` in their YAML).

`write_tasks` copies this file next to the YAML files it writes; it imports nothing from the package, so
lmms-eval can load it from there on its own.
"""

import re

LETTERS = "ABCD"
MC_INSTRUCTION = (
    "Watch the video and choose the correct option. Reply with the option's letter only (A, B, C or D)."
)


def doc_to_visual(doc):
    """The document's video file (an absolute path written by `write_tasks`)."""
    return [doc["video"]]


def mc_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The Video-MME-style prompt: instruction, question, lettered options, answer cue."""
    options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(doc["choices"]))
    return f"{MC_INSTRUCTION}\n{doc['question']}\n{options}\nThe answer is:"


def question_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The plain question (the loglikelihood variant and the caption task)."""
    return doc["question"]


def doc_to_choice(doc):
    return doc["choices"]


def doc_to_target_index(doc):
    return LETTERS.index(doc["answer"])


def parse_letter(response: str, choices) -> str | None:
    """The option letter a response gives: its first standalone A-D, else the one option whose text it names."""
    match = re.search(r"\b([A-D])\b", response.strip())
    if match:
        return match.group(1)
    words = set(re.findall(r"[a-z]+", response.lower()))
    named = [LETTERS[i] for i, choice in enumerate(choices) if choice.lower() in words]
    return named[0] if len(named) == 1 else None


def mc_process_results(doc, results):
    letter = parse_letter(results[0], doc["choices"])
    return {"mc_accuracy": float(letter == doc["answer"])}


def normalize_caption(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def caption_process_results(doc, results):
    return {"caption_exact_match": float(normalize_caption(results[0]) == normalize_caption(doc["answer"]))}
