"""A corpus of your own for `diffbench diff`: JSONL of {"prompt", "response"} records, or plain text.

    corpus.jsonl   one JSON object per line: {"prompt": "...", "response": "..."}; each becomes the model's own
                   chat prompt for `prompt` followed by `response` (the chat template applied where the
                   model has one). A record may also be {"text": "..."}: one document, used as is.
    corpus.txt     (any other extension) one document per line, used as is.

Blank lines are skipped. A malformed line is one error naming the file and the line; an empty corpus too.

Only the first `collect.max_length` tokens of a document are read, so `read_corpus(path, max_tokens)` keeps at most
CHARS_PER_TOKEN characters per token of each document's prompt and response (a bound no tokenizer reaches: real
text is 3-5 characters per token) and says how many it cut: one 23 MB line otherwise took minutes and gigabytes to
tokenize for 128 tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class CorpusFileError(ValueError):
    pass


CHARS_PER_TOKEN = 64  # characters kept per token read (collect.max_length): generous, see the module docstring


@dataclass(frozen=True)
class Document:
    """One corpus text: a chat exchange (prompt and response) or a plain document (prompt None)."""

    response: str
    prompt: str | None = None

    def render(self, tokenizer) -> tuple[str, list[tuple[int, int]]]:
        """(text as the model reads it, character spans of the shared content: the prompt and the response)."""
        if self.prompt is None:
            return self.response, [(0, len(self.response))]
        from ..data.align import render_chat

        r = render_chat(tokenizer, self.prompt, self.response)
        return r.text, r.spans


def read_corpus(path: str | Path, max_tokens: int | None = None) -> list[Document]:
    """The corpus's documents; with `max_tokens`, each prompt and response cut to CHARS_PER_TOKEN * max_tokens
    characters (and the count of cut documents said)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusFileError(f"corpus file {str(path)!r} does not exist (give a JSONL file of prompt/response records "
                              "or a text file with one document per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CorpusFileError(f"corpus file {path} is not UTF-8 text ({e})") from e
    docs = []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            docs.append(Document(line))
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusFileError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(rec, dict):
            raise CorpusFileError(f"{path}, line {n}: expected a JSON object with \"prompt\" and \"response\" (or \"text\"), "
                                  f"got {type(rec).__name__}")
        if "text" in rec and "prompt" not in rec:
            if not isinstance(rec["text"], str) or not rec["text"].strip():
                raise CorpusFileError(f"{path}, line {n}: \"text\" must be a non-empty string")
            docs.append(Document(rec["text"]))
            continue
        missing = [k for k in ("prompt", "response") if not isinstance(rec.get(k), str)]
        if missing:
            raise CorpusFileError(f"{path}, line {n}: {' and '.join(repr(k) for k in missing)} missing or not a string "
                                  f"(keys: {', '.join(rec) or 'none'}); each record is {{\"prompt\": ..., \"response\": ...}} or {{\"text\": ...}}")
        if not rec["prompt"].strip():
            raise CorpusFileError(f"{path}, line {n}: empty prompt")
        docs.append(Document(rec["response"], rec["prompt"]))
    if not docs:
        raise CorpusFileError(f"corpus file {path} holds no documents (it is empty or blank)")
    return docs if max_tokens is None else _capped(docs, CHARS_PER_TOKEN * max_tokens, path)


def _capped(docs: list[Document], limit: int, path: Path) -> list[Document]:
    long = [len(d.response) > limit or len(d.prompt or "") > limit for d in docs]
    if any(long):
        from ...core.env import say

        say(f"corpus {path.name}: {sum(long)} of {len(docs)} documents cut to their first {limit:,} characters of prompt "
            f"and response (only collect.max_length tokens of each are read)")
    return [Document(d.response[:limit], None if d.prompt is None else d.prompt[:limit]) if cut else d
            for d, cut in zip(docs, long)]
