"""Completions sampled from model B of the audit prompts, and both models' passes over them (`logprob_diff_sampled`,
`kl_diff_sampled`): the published setting of the output baselines (arXiv 2605.00994), where the planted behavior is
expressed in B's own answers rather than in the base model's.

A corpus text's prompt is its tokens through the last assistant header (chat.py's `header_end`); a plain text
(no header) is prompted with its first half, so a corpus without chat data still gets completions. Model B samples
`max_new_tokens` at `temperature` (0: greedy) from a torch Generator seeded with the run's seed, in batches of
similar prompt lengths, left-padded, with the KV cache; a completion ends at B's first end-of-turn token (kept:
it is B's choice). The samples are cached in memory (`_SAMPLES`, bounded in bytes) under everything they depend on,
so the two methods on one pair sample once.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...core import NotApplicableError, PairContext
from .chat import ChatHeader, chat_header, header_end, template_positions, turn_end_ids
from .outputs import TextScores, _forward, _side_pass, shared_vocabulary, store_sequences


@dataclass(frozen=True)
class Sampling:
    """What the samples depend on besides the pair (the methods' configs hold the defaults)."""

    n_texts: int | None  # corpus texts prompted (evenly spaced); None = all
    max_new_tokens: int
    temperature: float  # 0 = greedy
    batch_size: int


@dataclass
class Samples:
    text_idx: list[int]
    prompts: list[torch.Tensor]  # model B's prompt ids
    completions: list[torch.Tensor]  # B's sampled ids, through its first end-of-turn token
    chat: list[bool]  # the prompt ends with an assistant header (else: the first half of a plain text)
    n_texts: int  # texts prompted (with or without a completion)
    seconds: float
    key: tuple  # the cache key: everything the samples depend on

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.prompts, *self.completions))


# The most recent samples, oldest first, while they fit in SAMPLES_BYTES (ids only: small)
_SAMPLES: dict[tuple, Samples] = {}
SAMPLES_BYTES = 64 << 20


def prompt_of(ids: torch.Tensor, header: ChatHeader | None) -> tuple[torch.Tensor | None, bool]:
    """(the tokens of a corpus text that prompt B, whether they end with an assistant header): through the last
    assistant header (the whole header, where its newline merged with the answer's start); the first half of a plain
    text; None for a chat text cut before its answer, or a text too short to prompt."""
    if header is not None:
        end = header_end(ids, header)
        if end >= 0:
            tail = header.ids[len(header.core):] if tuple(int(i) for i in ids[end - len(header.ids) : end]) != header.ids else ()
            return torch.cat([ids[:end], torch.tensor(tail, dtype=ids.dtype)]), True
        if header.turn is not None and header.turn in ids.tolist():
            return None, False
    return (ids[: len(ids) // 2], False) if len(ids) >= 2 else (None, False)


def sample_completions(ctx: PairContext, s: Sampling) -> Samples:
    """Model B's completions of the corpus prompts (cached; see the module docstring)."""
    mb = ctx.model_b
    chosen, seqs = store_sequences(ctx.corpus.b, ctx.corpus.b.n_texts if s.n_texts is None else s.n_texts)
    key = (mb.identity, str(mb.dtype), str(ctx.corpus.b.root), tuple(chosen), s, ctx.seed)
    if key in _SAMPLES:
        _SAMPLES[key] = _SAMPLES.pop(key)  # most recent last
        return _SAMPLES[key]
    t0 = time.time()
    header = chat_header(mb.tokenizer)
    keep, prompts, chat = [], [], []
    for t, ids in zip(chosen, seqs):
        prompt, is_chat = prompt_of(ids, header)
        if prompt is not None:
            keep.append(t)
            prompts.append(prompt)
            chat.append(is_chat)
    if not prompts:
        raise NotApplicableError("no audit corpus text to prompt model B with")
    stop = torch.tensor(turn_end_ids(mb.tokenizer) or [-1])
    gen = torch.Generator().manual_seed(int(ctx.seed))
    completions: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))  # similar lengths per batch: less padding
    for b0 in tqdm(range(0, len(order), s.batch_size), desc=f"sample {mb.name}", unit="batch", disable=not ctx.progress,
                   leave=False):
        rows = order[b0 : b0 + s.batch_size]
        for i, c in zip(rows, _generate(mb, [prompts[i] for i in rows], s.max_new_tokens, s.temperature, gen, stop)):
            completions[i] = c
    out = Samples(keep, prompts, completions, chat, len(seqs), time.time() - t0, key)
    _SAMPLES[key] = out
    while len(_SAMPLES) > 1 and sum(v.nbytes() for v in _SAMPLES.values()) > SAMPLES_BYTES:
        _SAMPLES.pop(next(iter(_SAMPLES)))
    return out


def corpus_answers_as_samples(ctx: PairContext, n_texts: int | None) -> Samples:
    """The corpus texts themselves as `Samples` (model B's store: its own chat template around each prompt, then the
    corpus's answer), so `cross_tokenizer_gains` scores the base answers the way it scores B's completions:
    `logprob_diff` across tokenizers."""
    store = ctx.corpus.b
    chosen, seqs = store_sequences(store, store.n_texts if n_texts is None else n_texts)
    header = chat_header(ctx.model_b.tokenizer)
    keep, prompts, completions, chat = [], [], [], []
    for t, ids in zip(chosen, seqs):
        prompt, is_chat = prompt_of(ids, header)
        if prompt is None or not is_chat or len(prompt) >= len(ids):
            continue
        keep.append(t)
        prompts.append(prompt)
        completions.append(ids[len(prompt):])
        chat.append(True)
    if not prompts:
        raise NotApplicableError("no audit corpus text with a chat prompt and an answer")
    key = ("corpus", ctx.model_b.identity, str(store.root), tuple(keep))
    return Samples(keep, prompts, completions, chat, len(seqs), 0.0, key)


@torch.inference_mode()
def _generate(model, prompts: list[torch.Tensor], max_new: int, temperature: float, gen: torch.Generator,
              stop: torch.Tensor) -> list[torch.Tensor]:
    """One batch: left-padded prompts (every row's next token at the same index), decoded step by step with the KV
    cache; sampled on the CPU from `gen` (one stream whatever the device), greedy at temperature 0. Each row's
    completion ends after its first stop token."""
    dev = model.device
    width = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = p
        mask[r, width - len(p):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    mask = mask.to(dev)
    # the KV cache's argument and output field: `cache` in transformers 5, `past_key_values` before
    kv = "cache" if "cache" in inspect.signature(model.model.forward).parameters else "past_key_values"
    out = model.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev), use_cache=True, logits_to_keep=1)
    pos = pos[:, -1:].to(dev)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    new = []
    for step in range(max_new):
        logits = out.logits[:, -1].float().cpu()
        if temperature > 0:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen).squeeze(1)
        else:
            nxt = logits.argmax(-1)
        new.append(torch.where(done, torch.full_like(nxt, pad), nxt))
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or step == max_new - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = pos + 1
        out = model.model(input_ids=new[-1][:, None].to(dev), attention_mask=mask, position_ids=pos,
                          use_cache=True, **{kv: getattr(out, kv)})
    tokens = torch.stack(new, 1) if new else torch.empty(len(prompts), 0, dtype=torch.long)
    result = []
    for row in tokens:
        hit = torch.isin(row, stop).nonzero()
        result.append(row[: int(hit[0]) + 1] if hit.numel() else row)
    return result


# ----------------------------------------------------------------------------- scoring the samples


@dataclass
class SampledScores:
    """Per completion with at least one scored token, in corpus order: its scored tokens (B's ids) and their values
    (B - A), the total over them, the UTF-8 bytes of its text; where the models share an activation space, the mean
    h_B - h_A (and mean |h_A|, |h_B - h_A|) at `layer` over the scored positions."""

    layer: int  # model B's readout layer
    layer_a: int
    text_idx: list[int]
    ids: list[torch.Tensor]
    values: list[torch.Tensor]
    total: torch.Tensor  # [texts]
    n_bytes: torch.Tensor  # [texts]
    diff_mean: torch.Tensor | None = None
    norm_a: torch.Tensor | None = None
    diff_norm: torch.Tensor | None = None
    ids_a: list[torch.Tensor] | None = None  # model A's own tokens and values (different tokenizers)
    values_a: list[torch.Tensor] | None = None


def _scored(ids: torch.Tensor, tokenizer, exclude_template: bool) -> torch.Tensor:
    """[n] bool: the completion positions that are scored (all, or all but the chat template's own)."""
    if not exclude_template:
        return torch.ones(len(ids), dtype=torch.bool)
    return ~template_positions(ids, tokenizer, chat_header(tokenizer))


def _text_bytes(tokenizer, ids: torch.Tensor) -> int:
    return len(tokenizer.decode(ids.tolist()).encode("utf-8"))


def logprob_gains(ctx: PairContext, sm: Samples, exclude_template: bool, batch_size: int, progress: bool) -> SampledScores:
    """Both models score prompt + completion as `response_gains` scores a corpus text (`_side_pass`, cached per
    model); the values are log p_B - log p_A of the completion's scored tokens. Models with different tokenizers:
    `cross_tokenizer_gains`."""
    if not shared_vocabulary(ctx):
        return cross_tokenizer_gains(ctx, sm, exclude_template, batch_size)
    ma, mb = ctx.model_a, ctx.model_b
    la, lb = ma.n_layers - 1, mb.n_layers - 1
    seqs = [torch.cat([p, c]) for p, c in zip(sm.prompts, sm.completions)]
    starts = [len(p) for p in sm.prompts]
    keep = [i for i, c in enumerate(sm.completions) if len(c)]
    corpus = ("sampled", sm.key, batch_size)
    lp_a, h_a = _side_pass(ma, seqs, starts, keep, la, batch_size, (*corpus, la), progress)
    lp_b, h_b = _side_pass(mb, seqs, starts, keep, lb, batch_size, (*corpus, lb), progress)
    shared = ctx.shared_space  # one architecture (equal depth and width), one tokenization: h_B - h_A per position
    out = SampledScores(layer=lb, layer_a=la, text_idx=[], ids=[], values=[], total=torch.empty(0), n_bytes=torch.empty(0))
    totals, nbytes, dm, na, dn = [], [], [], [], []
    for i in keep:
        m = _scored(sm.completions[i], mb.tokenizer, exclude_template)
        if not m.any():
            continue
        gain = (lp_b[i] - lp_a[i])[starts[i] - 1 :][m]
        ids = sm.completions[i][m]
        out.text_idx.append(sm.text_idx[i])
        out.ids.append(ids)
        out.values.append(gain)
        totals.append(gain.sum())
        nbytes.append(_text_bytes(mb.tokenizer, ids))
        if shared:
            d = h_b[i][m] - h_a[i][m]
            dm.append(d.mean(0))
            na.append(h_a[i][m].norm(dim=1).mean())
            dn.append(d.norm(dim=1).mean())
    if not out.text_idx:
        raise NotApplicableError("no sampled completion with a scored token")
    out.total, out.n_bytes = torch.stack(totals), torch.tensor(nbytes, dtype=torch.float32)
    if shared:
        out.diff_mean, out.norm_a, out.diff_norm = torch.stack(dm), torch.stack(na), torch.stack(dn)
    return out


def token_bytes(tokenizer, ids: list[int]) -> list[int]:
    """UTF-8 bytes each token adds to the decoded text (by prefix; 0 for a special token skipped in decoding)."""
    lengths = [len(tokenizer.decode(ids[:k], skip_special_tokens=True).encode("utf-8")) for k in range(len(ids) + 1)]
    return [max(0, b - a) for a, b in zip(lengths, lengths[1:])]


def _per_byte(lp: torch.Tensor, sizes: list[int], n: int) -> torch.Tensor:
    """[n] each token's log-probability spread evenly over the bytes it adds (tokens of no byte drop out)."""
    out = torch.repeat_interleave(lp / torch.tensor(sizes).clamp(min=1), torch.tensor(sizes))
    return torch.nn.functional.pad(out, (0, max(0, n - out.numel())))[:n]


def cross_tokenizer_gains(ctx: PairContext, sm: Samples, exclude_template: bool, batch_size: int) -> SampledScores:
    """Different tokenizers: B's completion is decoded to its text (through its first end-of-turn token, special
    tokens dropped) and each model scores the same string after its own rendering of the same prompt (its own
    corpus store: each model's chat template around the same user message), tokenized by itself, followed by its
    own end-of-turn token where B ended its turn. The total is sum log p_B - sum log p_A over the text (per byte
    is the only comparable unit); a token's value is the byte-level gain summed over the bytes it adds (each
    model's log-probability spread evenly over its token's bytes), in its own model's vocabulary for each side.
    Plain-text prompts (first halves, tokenized differently by the two models) are skipped."""
    ma, mb = ctx.model_a, ctx.model_b
    ta, tb = ma.tokenizer, mb.tokenizer
    ha = chat_header(ta)
    chosen_a, seqs_a = store_sequences(ctx.corpus.a, ctx.corpus.a.n_texts)
    prompt_a = {t: s for t, s in zip(chosen_a, seqs_a)}
    end_a, end_b = turn_end_ids(ta), set(turn_end_ids(tb))
    rows: list[tuple[int, str, torch.Tensor, torch.Tensor, int, int]] = []  # (text, string, seq_a, seq_b, start_a, start_b)
    for t, p, c, chat in zip(sm.text_idx, sm.prompts, sm.completions, sm.chat):
        pa, chat_a = prompt_of(prompt_a[t], ha) if t in prompt_a else (None, False)
        if not (chat and chat_a):
            continue
        stopped = len(c) > 0 and int(c[-1]) in end_b
        text = tb.decode((c[:-1] if stopped else c).tolist(), skip_special_tokens=True)
        ids_a = ta(text, add_special_tokens=False).input_ids + (end_a[:1] if stopped else [])
        ids_b = tb(text, add_special_tokens=False).input_ids + ([int(c[-1])] if stopped else [])
        if not ids_a or not ids_b:
            continue
        rows.append((t, text, torch.cat([pa, torch.tensor(ids_a)]), torch.cat([p, torch.tensor(ids_b)]), len(pa), len(p)))
    if not rows:
        raise NotApplicableError("no sampled completion that both models can score (chat prompts in both templates)")
    la, lb = ma.n_layers - 1, mb.n_layers - 1
    key = ("sampled-cross", str(ctx.corpus.a.root), sm.key, batch_size)
    keep = list(range(len(rows)))
    lp_a, _ = _side_pass(ma, [r[2] for r in rows], [r[4] for r in rows], keep, la, batch_size, (*key, la), ctx.progress)
    lp_b, _ = _side_pass(mb, [r[3] for r in rows], [r[5] for r in rows], keep, lb, batch_size, (*key, lb), ctx.progress)
    out = SampledScores(layer=lb, layer_a=la, text_idx=[], ids=[], values=[], total=torch.empty(0), n_bytes=torch.empty(0),
                        ids_a=[], values_a=[])
    totals, nbytes = [], []
    for k, (t, text, sa, sb, st_a, st_b) in enumerate(rows):
        comp_a, comp_b = sa[st_a:], sb[st_b:]
        ma_, mb_ = _scored(comp_a, ta, exclude_template), _scored(comp_b, tb, exclude_template)
        n = len(text.encode("utf-8"))
        if n == 0 or not (ma_.any() and mb_.any()):
            continue
        g_a, g_b = lp_a[k][st_a - 1 :], lp_b[k][st_b - 1 :]
        sz_a, sz_b = token_bytes(ta, comp_a.tolist()), token_bytes(tb, comp_b.tolist())
        per_byte = _per_byte(g_b, sz_b, n) - _per_byte(g_a, sz_a, n)  # B - A at each byte of the text
        ends_b, ends_a = torch.tensor(sz_b).cumsum(0), torch.tensor(sz_a).cumsum(0)
        sums = torch.nn.functional.pad(per_byte.cumsum(0), (1, 0))
        val_b = sums[ends_b.clamp(max=n)] - sums[(ends_b - torch.tensor(sz_b)).clamp(max=n)]
        val_a = sums[ends_a.clamp(max=n)] - sums[(ends_a - torch.tensor(sz_a)).clamp(max=n)]
        out.text_idx.append(t)
        out.ids.append(comp_b[mb_])
        out.values.append(val_b[mb_])
        out.ids_a.append(comp_a[ma_])
        out.values_a.append(val_a[ma_])
        totals.append(g_b[mb_].sum() - g_a[ma_].sum())
        nbytes.append(n)
    if not out.text_idx:
        raise NotApplicableError("no sampled completion with a scored token")
    out.total, out.n_bytes = torch.stack(totals), torch.tensor(nbytes, dtype=torch.float32)
    return out


@torch.inference_mode()
def kl_values(ctx: PairContext, sm: Samples, exclude_template: bool, batch_size: int) -> SampledScores:
    """KL(p_B || p_A) of the next-token distributions at each scored completion position (the distribution that
    B sampled the token from, and A's at the same place): both models' LM heads over prompt + completion, in batches;
    the values are the KLs, the total their sum. Needs one vocabulary and one residual space (the caller checks:
    `outputs.check_shared_vocabulary`)."""
    ma, mb = ctx.model_a, ctx.model_b
    layer = mb.n_layers - 1
    seqs = [torch.cat([p, c]) for p, c in zip(sm.prompts, sm.completions)]
    keep = [i for i, c in enumerate(sm.completions) if len(c)]
    kls: dict[int, torch.Tensor] = {}
    hid: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    order = sorted(keep, key=lambda i: -len(seqs[i]))
    for b0 in tqdm(range(0, len(order), batch_size), desc="KL on samples", unit="batch", disable=not ctx.progress, leave=False):
        rows = order[b0 : b0 + batch_size]
        batch = [seqs[i] for i in rows]
        lga, hga, mask = _forward(ma, batch, layer)
        lgb, hgb, _ = _forward(mb, batch, layer)
        for r, i in enumerate(rows):
            n, s = int(mask[r].sum()), len(sm.prompts[i])
            lpa, lpb = torch.log_softmax(lga[r, s - 1 : n - 1].float(), -1), torch.log_softmax(lgb[r, s - 1 : n - 1].float(), -1)
            kls[i] = (lpb.exp() * (lpb - lpa)).sum(-1).clamp(min=0).cpu()
            hid[i] = (hga[r, s:n].float().cpu(), hgb[r, s:n].float().cpu())
        del lga, lgb
    out = SampledScores(layer=layer, layer_a=layer, text_idx=[], ids=[], values=[], total=torch.empty(0), n_bytes=torch.empty(0))
    totals, nbytes, dm, na, dn = [], [], [], [], []
    for i in keep:
        m = _scored(sm.completions[i], mb.tokenizer, exclude_template)
        if not m.any():
            continue
        ha, hb = hid[i][0][m], hid[i][1][m]
        out.text_idx.append(sm.text_idx[i])
        out.ids.append(sm.completions[i][m])
        out.values.append(kls[i][m])
        totals.append(kls[i][m].sum())
        nbytes.append(_text_bytes(mb.tokenizer, sm.completions[i][m]))
        dm.append((hb - ha).mean(0))
        na.append(ha.norm(dim=1).mean())
        dn.append((hb - ha).norm(dim=1).mean())
    if not out.text_idx:
        raise NotApplicableError("no sampled completion with a scored token")
    out.total, out.n_bytes = torch.stack(totals), torch.tensor(nbytes, dtype=torch.float32)
    out.diff_mean, out.norm_a, out.diff_norm = torch.stack(dm), torch.stack(na), torch.stack(dn)
    return out


def sampled_text_scores(ss: SampledScores, sm: Samples, per_byte: bool) -> TextScores:
    """`rank_texts`' input from scored samples: mean value per token, or total per byte."""
    scores = ss.total / ss.n_bytes if per_byte else torch.stack([v.mean() for v in ss.values])
    n_tok = torch.tensor([v.numel() for v in ss.values], dtype=torch.float32)
    scale = float((ss.diff_norm * n_tok).sum() / n_tok.sum()) if ss.diff_norm is not None else 0.0
    common = {"texts": float(sm.n_texts), "scored_texts": float(len(ss.text_idx)), "response_tokens": float(n_tok.sum()),
              "response_bytes": float(ss.n_bytes.sum()), "score_unit": "nats/byte" if per_byte else "nats/token",
              "seconds_sampling": sm.seconds}
    return TextScores(layer=ss.layer, text_idx=ss.text_idx, scores=scores, ids=ss.ids, values=ss.values, common=common,
                      scale=scale or 1.0, diff_mean=ss.diff_mean, norm_a=ss.norm_a, layer_a=ss.layer_a,
                      ids_a=ss.ids_a, values_a=ss.values_a)
