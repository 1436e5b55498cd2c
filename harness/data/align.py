"""Cross-tokenizer alignment: which positions of two tokenizations of the same text are comparable.

Two models with different tokenizers split the same text differently. A position of model A and
a position of model B are comparable when both models have read exactly the same text there: their
tokens end at the same character offset. `align_ends` walks both tokenizations at once:

- **special tokens** (BOS, chat-control tokens) are skipped: never paired, not counted;
- offsets are **normalised**: only non-whitespace characters of the shared content count, so
  whitespace differences (" world" vs "world", "\\n\\n" vs "\\n", "\\n") and text outside the shared
  content (each model's own chat template, see `content_spans`) do not break the alignment;
- where the current tokens of both sides end at the same normalised offset they are paired;
  otherwise the side whose window ends earlier (the shorter decoded string) grows by one token, until
  both windows end at the same offset. The **last token of each window** is kept; tokens that add no
  content (whitespace, template text) after a match are absorbed into that window, so e.g. the last
  token of each model's assistant header pairs with the other's;
- a window that needs more than `max_window` tokens on either side is **not paired** (the
  tokenizations disagree too much there, or a side's token strings could not be located); the walk
  resynchronises at the next common offset, so one bad region costs only its own tokens.

Everything here is plain Python on offsets and token strings; `align_encodings` runs real
tokenizers (Hugging Face fast tokenizers with offset mappings) over texts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

MAX_WINDOW = 8
ALIGN_VERSION = 2  # bump when the alignment or its recorded stats change (cached alignments are keyed by it)

Span = tuple[int, int]


@dataclass
class Alignment:
    """Aligned positions of one text: pairs (i_a, i_b) of token indices, and what could be aligned."""

    pairs: list[tuple[int, int]]
    n_a: int  # tokens of A that carry text (special tokens excluded)
    n_b: int
    n_failed_windows: int = 0  # windows longer than max_window, left unpaired
    n_content_a: int | None = None  # tokens of A that read shared content (not only whitespace / template text)
    n_content_b: int | None = None

    def __post_init__(self) -> None:
        self.n_content_a = self.n_a if self.n_content_a is None else self.n_content_a
        self.n_content_b = self.n_b if self.n_content_b is None else self.n_content_b

    @property
    def share_a(self) -> float:
        return len(self.pairs) / self.n_a if self.n_a else 0.0

    @property
    def share_b(self) -> float:
        return len(self.pairs) / self.n_b if self.n_b else 0.0

    @property
    def share_shorter(self) -> float:
        """Aligned positions as a share of the shorter tokenization (the most that can be aligned)."""
        n = min(self.n_a, self.n_b)
        return len(self.pairs) / n if n else 0.0


@dataclass
class AlignmentStats:
    """Totals over many texts."""

    n_texts: int = 0
    n_pairs: int = 0
    n_a: int = 0
    n_b: int = 0
    n_shorter: int = 0
    n_content_a: int = 0
    n_content_b: int = 0
    n_content_shorter: int = 0
    n_failed_windows: int = 0
    n_texts_without_pairs: int = 0
    max_window: int = MAX_WINDOW

    def add(self, al: Alignment) -> None:
        self.n_texts += 1
        self.n_pairs += len(al.pairs)
        self.n_a += al.n_a
        self.n_b += al.n_b
        self.n_shorter += min(al.n_a, al.n_b)
        self.n_content_a += al.n_content_a
        self.n_content_b += al.n_content_b
        self.n_content_shorter += min(al.n_content_a, al.n_content_b)
        self.n_failed_windows += al.n_failed_windows
        self.n_texts_without_pairs += int(not al.pairs)

    def as_dict(self) -> dict:
        return {
            "n_texts": self.n_texts, "n_pairs": self.n_pairs, "n_tokens_a": self.n_a, "n_tokens_b": self.n_b,
            "share_a": self.n_pairs / self.n_a if self.n_a else 0.0,
            "share_b": self.n_pairs / self.n_b if self.n_b else 0.0,
            "share_shorter": self.n_pairs / self.n_shorter if self.n_shorter else 0.0,
            # the same over tokens that read shared content (template text and whitespace-only tokens left out)
            "n_content_tokens_a": self.n_content_a, "n_content_tokens_b": self.n_content_b,
            "content_share_a": self.n_pairs / self.n_content_a if self.n_content_a else 0.0,
            "content_share_b": self.n_pairs / self.n_content_b if self.n_content_b else 0.0,
            "content_share_shorter": self.n_pairs / self.n_content_shorter if self.n_content_shorter else 0.0,
            "failed_windows": self.n_failed_windows, "texts_without_pairs": self.n_texts_without_pairs,
            "max_window": self.max_window,
        }


# ----------------------------------------------------------------------------- the walk


def align_ends(ends_a: Sequence[int | None], ends_b: Sequence[int | None], max_window: int = MAX_WINDOW) -> tuple[list[tuple[int, int]], int]:
    """Pair token indices whose normalised end offsets agree.

    `ends_x[i]` is the normalised offset at which token i of side x ends (characters of shared
    content read so far), or None for a token that cannot close a window (a special token, or a
    token string that could not be located in the text). Returns (pairs, number of windows left
    unpaired because they were longer than `max_window`).
    """
    if max_window < 1:
        raise ValueError("max_window must be >= 1")
    pairs: list[tuple[int, int]] = []
    failed = 0
    na, nb = len(ends_a), len(ends_b)
    i = j = 0
    last = 0  # normalised offset of the previous match (0: nothing read yet)
    wa = wb = 0  # tokens that grew the current windows

    def absorb(ends: Sequence[int | None], k: int, e: int) -> int:
        """Index of the last token after k that still ends at e (only specials and text-free tokens between)."""
        best, k = k, k + 1
        while k < len(ends) and (ends[k] is None or ends[k] == e):
            if ends[k] == e:
                best = k
            k += 1
        return best

    while i < na and j < nb:
        ea, eb = ends_a[i], ends_b[j]
        if ea is None or ea <= last:  # special, unlocated, or adds nothing since the last match
            i += 1
            continue
        if eb is None or eb <= last:
            j += 1
            continue
        if ea == eb:
            i, j = absorb(ends_a, i, ea), absorb(ends_b, j, eb)
            if wa + 1 <= max_window and wb + 1 <= max_window:
                pairs.append((i, j))
            else:
                failed += 1
            last = ea
            i, j = i + 1, j + 1
            wa = wb = 0
        elif ea < eb:  # A's window is the shorter string: grow it
            i += 1
            wa += 1
        else:
            j += 1
            wb += 1
    return pairs, failed


# ----------------------------------------------------------------------------- normalisation


def _is_space(ch: str) -> bool:
    return ch.isspace() or ch in "\u2581\u0120\u010a"  # SentencePiece ▁, byte-level Ġ / Ċ shown raw


def normalised_offsets(text: str, spans: Sequence[Span] | None = None) -> list[int]:
    """offset[c] = shared-content, non-whitespace characters in text[:c] (len(text) + 1 entries)."""
    inside = [False] * len(text)
    for s, e in spans if spans is not None else [(0, len(text))]:
        if not 0 <= s <= e <= len(text):
            raise ValueError(f"content span ({s}, {e}) outside a text of {len(text)} characters")
        for c in range(s, e):
            inside[c] = True
    out = [0] * (len(text) + 1)
    n = 0
    for c, ch in enumerate(text):
        if inside[c] and not _is_space(ch):
            n += 1
        out[c + 1] = n
    return out


def normalised_content(text: str, spans: Sequence[Span] | None = None) -> str:
    """The shared content of a text with whitespace removed (what both sides must agree on)."""
    parts = [text[s:e] for s, e in (spans if spans is not None else [(0, len(text))])]
    return "".join(ch for ch in unicodedata.normalize("NFC", "".join(parts)) if not _is_space(ch))


def ends_from_offsets(text: str, offsets: Sequence[Span], special: Sequence[bool] | None = None,
                      spans: Sequence[Span] | None = None) -> list[int | None]:
    """Normalised end offset of each token from its character offsets (None for special tokens)."""
    norm = normalised_offsets(text, spans)
    out: list[int | None] = []
    for k, (_, end) in enumerate(offsets):
        if special is not None and special[k]:
            out.append(None)
        else:
            out.append(norm[min(max(int(end), 0), len(text))])
    return out


def ends_from_pieces(text: str, pieces: Sequence[str], special: Sequence[bool] | None = None,
                     lookahead: int = 32) -> list[int | None]:
    """Normalised end offsets from token strings (for tokenizers without offset mappings).

    Each piece, whitespace removed, is looked up at the current position of the text (whitespace
    skipped). A piece that is not found there (an unknown token, a byte fragment of a multi-byte
    character, a normaliser that changed the text) gets None and does not move the cursor, so the
    pieces after it can still be located (searched up to `lookahead` characters ahead): the
    alignment fails locally, not for the rest of the text.
    """
    chars = [ch for ch in text if not _is_space(ch)]
    content = "".join(chars)
    out: list[int | None] = []
    cursor = 0
    pending = False  # the previous piece could not be located
    for k, piece in enumerate(pieces):
        p = "".join(ch for ch in piece if not _is_space(ch))
        if special is not None and special[k]:  # never a window end, but it may have consumed text
            if p and content.startswith(p, cursor):
                cursor += len(p)
            out.append(None)
            continue
        if not p:  # whitespace-only token: reads no content
            out.append(cursor if cursor > 0 else None)
            continue
        if content.startswith(p, cursor):
            cursor += len(p)
            out.append(cursor)
        elif pending and 0 <= (q := content.find(p, cursor, cursor + lookahead + len(p))):
            # the unlocated piece(s) before this one covered content[cursor:q]: resynchronise
            cursor = q + len(p)
            out.append(cursor)
        else:
            out.append(None)
            pending = True
            continue
        pending = False
    return out


# ----------------------------------------------------------------------------- one text, two tokenizations


def align_offsets(text_a: str, offsets_a: Sequence[Span], text_b: str, offsets_b: Sequence[Span], *,
                  special_a: Sequence[bool] | None = None, special_b: Sequence[bool] | None = None,
                  spans_a: Sequence[Span] | None = None, spans_b: Sequence[Span] | None = None,
                  max_window: int = MAX_WINDOW) -> Alignment:
    """Align two tokenizations given their character offsets into (possibly differently formatted) texts.

    `spans_x` are the character spans of the shared content in text_x (default: the whole text);
    the shared content of both sides must be the same up to whitespace.
    """
    if normalised_content(text_a, spans_a) != normalised_content(text_b, spans_b):
        raise ValueError("the two texts do not share the same content (after removing whitespace and template text)")
    ends_a = ends_from_offsets(text_a, offsets_a, special_a, spans_a)
    ends_b = ends_from_offsets(text_b, offsets_b, special_b, spans_b)
    pairs, failed = align_ends(ends_a, ends_b, max_window)
    n_a = sum(1 for k in range(len(offsets_a)) if not (special_a and special_a[k]))
    n_b = sum(1 for k in range(len(offsets_b)) if not (special_b and special_b[k]))
    return Alignment(pairs, n_a, n_b, failed, _n_content(text_a, offsets_a, special_a, spans_a),
                     _n_content(text_b, offsets_b, special_b, spans_b))


def _n_content(text: str, offsets: Sequence[Span], special: Sequence[bool] | None, spans: Sequence[Span] | None) -> int:
    """Tokens that read at least one non-whitespace character of shared content."""
    norm = normalised_offsets(text, spans)
    clip = lambda c: min(max(int(c), 0), len(text))  # noqa: E731
    return sum(1 for k, (s, e) in enumerate(offsets) if not (special and special[k]) and norm[clip(e)] > norm[clip(s)])


def align_pieces(text: str, pieces_a: Sequence[str], pieces_b: Sequence[str], *,
                 special_a: Sequence[bool] | None = None, special_b: Sequence[bool] | None = None,
                 max_window: int = MAX_WINDOW) -> Alignment:
    """Align two tokenizations of `text` given as decoded token strings."""
    ends_a = ends_from_pieces(text, pieces_a, special_a)
    ends_b = ends_from_pieces(text, pieces_b, special_b)
    pairs, failed = align_ends(ends_a, ends_b, max_window)
    n_a = sum(1 for k in range(len(pieces_a)) if not (special_a and special_a[k]))
    n_b = sum(1 for k in range(len(pieces_b)) if not (special_b and special_b[k]))
    content = lambda ps, sp: sum(1 for k, p in enumerate(ps) if not (sp and sp[k]) and any(not _is_space(c) for c in p))  # noqa: E731
    return Alignment(pairs, n_a, n_b, failed, content(pieces_a, special_a), content(pieces_b, special_b))


# ----------------------------------------------------------------------------- real tokenizers


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (added tokens marked special, plus bos/eos/pad/unk)."""
    ids = {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    ids |= {i for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    return ids


def encode_with_offsets(tokenizer, texts: Sequence[str], max_length: int | None = None) -> list[tuple[list[int], list[Span]]]:
    """(token ids, character offsets) per text, tokenized as the activation store does it."""
    kw = dict(truncation=True, max_length=max_length) if max_length else {}
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, **kw)
    return [(list(ids), [tuple(o) for o in offs]) for ids, offs in zip(enc["input_ids"], enc["offset_mapping"])]


def align_encodings(tok_a, tok_b, texts_a: Sequence[str], texts_b: Sequence[str] | None = None, *,
                    spans_a: Sequence[Sequence[Span]] | None = None, spans_b: Sequence[Sequence[Span]] | None = None,
                    max_length: int | None = None, max_window: int = MAX_WINDOW
                    ) -> tuple[list[Alignment], list[list[int]], list[list[int]], AlignmentStats]:
    """Tokenize each text with both tokenizers and align them.

    `texts_b` (default: `texts_a`) may be formatted differently (each model's own chat template);
    `spans_*` then give the shared content of each text. Returns (alignments, ids_a, ids_b, totals).
    """
    texts_b = texts_a if texts_b is None else texts_b
    if len(texts_a) != len(texts_b):
        raise ValueError(f"{len(texts_a)} texts for A but {len(texts_b)} for B")
    enc_a = encode_with_offsets(tok_a, texts_a, max_length)
    enc_b = encode_with_offsets(tok_b, texts_b, max_length)
    sp_a, sp_b = special_ids(tok_a), special_ids(tok_b)
    stats = AlignmentStats(max_window=max_window)
    out = []
    for k, ((ids_a, off_a), (ids_b, off_b)) in enumerate(zip(enc_a, enc_b)):
        al = align_offsets(texts_a[k], off_a, texts_b[k], off_b,
                           special_a=[i in sp_a for i in ids_a], special_b=[i in sp_b for i in ids_b],
                           spans_a=spans_a[k] if spans_a is not None else None,
                           spans_b=spans_b[k] if spans_b is not None else None, max_window=max_window)
        stats.add(al)
        out.append(al)
    return out, [e[0] for e in enc_a], [e[0] for e in enc_b], stats


def tokenizer_fingerprint(tok) -> str:
    """Hash of everything that decides a tokenizer's tokens and chat format (memoised on the object:
    serialising a 262k-token vocabulary takes a while)."""
    fp = getattr(tok, "_diffbench_fingerprint", None)
    if fp is None:
        import hashlib

        try:
            import json

            spec = json.loads(tok.backend_tokenizer.to_str())
            spec.pop("truncation", None)  # call-time state (set by truncation=True calls), not the tokenizer
            spec.pop("padding", None)
            spec = json.dumps(spec, sort_keys=True)
        except AttributeError:
            spec = repr(sorted(tok.get_vocab().items())) + type(tok).__name__
        fp = hashlib.sha256((spec + "\0" + str(tok.chat_template)).encode()).hexdigest()
        try:
            tok._diffbench_fingerprint = fp
        except AttributeError:
            pass
    return fp


def same_tokenizer(tok_a, tok_b) -> bool:
    """True when both tokenizers produce identical tokens and chat format (the exact, unaligned path applies)."""
    return tok_a is tok_b or tokenizer_fingerprint(tok_a) == tokenizer_fingerprint(tok_b)


@dataclass
class Rendered:
    """A text as one model sees it, and where the shared content lies in it."""

    text: str
    spans: list[Span] = field(default_factory=list)


def render_chat(tokenizer, user: str, answer: str) -> Rendered:
    """The model's own chat prompt for `user` followed by `answer`; the user text and the answer are
    the shared content, the template around them is the model's own."""
    from .generate import chat_prompt

    prompt = chat_prompt(tokenizer, user)
    u = prompt.rfind(user)
    if u < 0:
        raise ValueError(f"the chat template dropped the user text {user[:40]!r}")
    return Rendered(prompt + answer, [(u, u + len(user)), (len(prompt), len(prompt) + len(answer))])
