"""The audit corpus's shipped answers: the base model's greedy answers to every suite's corpus prompts, made once
(fp32, scripts/ship_corpus_answers.py) and shipped beside the organisms (zoo/answers/<base>-<answer_tokens>.json).

Why ship them: an answer generated on the machine depends on its dtype and batch shapes (bf16 on one CPU, fp32 on
another), so two machines read two different corpora and score two different benchmarks; and generating them is
most of the collect stage of a short run. With the answers shipped every machine reads the same texts. A prompt the
file lacks (a suite of your own, another answer length) is answered here, by `distill`, and the corpus record
says how many answers came from where.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

from ...core.env import dtype_name
from ...core.io import CorruptFileError, read_checked_json, write_checked_json
from ...core.model import LoadedModel
from ..plant.distill import distill
from ..plant.zoo import zoo_dir


def answers_path(base_name: str, answer_tokens: int) -> Path:
    return zoo_dir() / "answers" / f"{base_name}-{answer_tokens}.json"


@lru_cache(maxsize=4)
def _read(path: Path) -> dict:
    try:
        return read_checked_json(path)
    except CorruptFileError as e:
        raise CorruptFileError(f"{e}. The shipped corpus answers are package data: reinstall diffbench, or "
                               "regenerate them with scripts/ship_corpus_answers.py") from None


def shipped_file(model: LoadedModel, answer_tokens: int) -> dict | None:
    """The shipped answers file for `model` (matched by its weights' identity, not its name): its answers (prompt ->
    answer) and where they were made; None when none is shipped for these weights."""
    path = answers_path(model.name, answer_tokens)
    if not path.exists():
        return None
    data = _read(path)
    return data if data.get("identity") == model.identity else None  # another checkpoint under the same name


def corpus_answers(model: LoadedModel, prompts: Sequence[str], answer_tokens: int,
                   progress: bool = True) -> tuple[list[str], dict]:
    """The base model's answer to each prompt, shipped where the file has it, else generated (`distill`, cached);
    with a record of where they came from for the run's corpus record."""
    shipped = shipped_file(model, answer_tokens)
    known = shipped["answers"] if shipped else {}
    missing = [p for p in prompts if p not in known]
    made = dict(zip(missing, distill(model, missing, answer_tokens, progress))) if missing else {}
    record = {"shipped": len(prompts) - len(missing), "generated_here": len(missing)}
    if shipped:
        record["shipped_from"] = {k: shipped[k] for k in ("dtype", "machine", "commit") if k in shipped}
    return [known[p] if p in known else made[p] for p in prompts], record


def ship(model: LoadedModel, prompts: Sequence[str], answer_tokens: int, machine: str, commit: str,
         progress: bool = True) -> Path:
    """Write the shipped answers of `prompts` (generated here by `distill`, in the model's dtype)."""
    unique = sorted(set(prompts))
    answers = distill(model, unique, answer_tokens, progress)
    path = answers_path(model.name, answer_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checked_json(path, {"base": model.name, "identity": model.identity, "answer_tokens": answer_tokens,
                              "dtype": dtype_name(model.dtype), "machine": machine, "commit": commit,
                              "answers": dict(zip(unique, answers))})
    _read.cache_clear()
    return path
