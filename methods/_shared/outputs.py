"""Shared forward pass of the output baselines (`kl_diff`, `logit_diff_tokens`).

Both models are run, with their LM heads, on `n_texts` of the pair's corpus texts (evenly spaced
over the text set; the token ids come from model A's activation store, so no tokenizer call is
needed and the tokens are exactly those the activation methods see). Per position >= 1 (every
next-token distribution except the attention-sink position) it keeps:

* kl:        KL(p_B || p_A) in nats,
* top_diff:  the `TOP_K` token ids with the largest log p_B - log p_A, ranked by logits_B - logits_A
             (the same order: softmax's per-position shift does not change a ranking; the raw
             difference is exactly 0 for an unmoved token, where log p_B - log p_A carries rounding
             noise); -1 where the gain does not exceed the position's median gain (estimated on every
             (V // 1024)-th token; unmoved tokens tie there exactly),
* gain_ids / gain_vals: the `TOP_GAIN` tokens with the largest p_B - p_A,
* hid_a / hid_b: both models' residual stream at `layer` (default: the last residual index the
             activation store can hold, n_layers - 1, i.e. the input of the last block),
* prob_gain: sum over positions of p_B - p_A  [V].

The result is cached in memory (one entry), so `kl_diff` and `logit_diff_tokens` on the same pair
share one pass.

`response_gains` is a leaner pass for `logprob_diff`, usually over every corpus text: per text only the
log-probability gain log p_B(x_t) - log p_A(x_t) of the actual token at each position (reduced per batch, no
[N, V] tensor is kept) and the mean residual difference over the text's response positions (chat.py finds them).
`response_passes` is that pass for any number of models of one tokenizer (the N-way `logprob_vs_rest` contrasts each
member with the mean of the others: `ResponsePasses.gains`). `rank_texts` turns per-text scores into findings, one per
text (`logprob_diff`, `logprob_vs_rest` and the sampled variants of sampled.py share it; `response_text_scores` makes
its input from a contrast's gains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...core.batching import right_pad
from ...core.capture import residual_hooks

from ...core import Finding, NotApplicableError, PairContext, Readout
from ...core.activations import ActivationStore
from ...core.lens import final_norm_gain, unembedding
from .difference import difference_readout

TOP_K = 64
TOP_GAIN = 16

_CACHE: dict[tuple, "OutputDiff"] = {}


@dataclass
class OutputDiff:
    layer: int
    text_idx: torch.Tensor  # [N]
    pos: torch.Tensor  # [N]
    token_id: torch.Tensor  # [N] input token at the position
    kl: torch.Tensor  # [N]
    top_diff: torch.Tensor  # [N, TOP_K]
    gain_ids: torch.Tensor  # [N, TOP_GAIN]
    gain_vals: torch.Tensor  # [N, TOP_GAIN]
    hid_a: torch.Tensor  # [N, d]
    hid_b: torch.Tensor  # [N, d]
    prob_gain: torch.Tensor  # [V]
    n_texts: int
    seconds: float

    @property
    def n(self) -> int:
        return int(self.kl.shape[0])


def final_layer(ctx: PairContext) -> int:
    """The last residual index an activation store holds: n_layers - 1 (the input of the last block)."""
    return ctx.model_b.n_layers - 1


def shared_vocabulary(ctx: PairContext) -> bool:
    """The two tokenizers are one vocabulary (a token id means the same text in both models)."""
    ta, tb = ctx.model_a.tokenizer, ctx.model_b.tokenizer
    return len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab()


def check_shared_vocabulary(ctx: PairContext) -> None:
    va, vb = ctx.model_a.model.get_output_embeddings().weight.shape[0], ctx.model_b.model.get_output_embeddings().weight.shape[0]
    if va != vb or not shared_vocabulary(ctx):
        raise NotApplicableError("output baselines compare next-token distributions and need one shared vocabulary/tokenizer")
    if ctx.model_a.n_layers != ctx.model_b.n_layers or ctx.model_a.hidden_size != ctx.model_b.hidden_size:
        raise NotApplicableError("output baselines read both models' final residual stream and need equal depth and width")


def token_sequences(ctx: PairContext, n_texts: int) -> tuple[list[int], list[torch.Tensor]]:
    """(text indices, token ids per text) of `n_texts` corpus texts evenly spaced over the set."""
    return store_sequences(ctx.corpus.a, n_texts)


def store_sequences(store, n_texts: int) -> tuple[list[int], list[torch.Tensor]]:
    """`token_sequences` from one model's activation store (its own tokens: model B's across tokenizers)."""
    ids, tidx, pos = [], [], []
    for sh in store.iter_shards(store.layers[0]):
        ids.append(sh.token_id)
        tidx.append(sh.text_idx)
        pos.append(sh.pos)
    ids, tidx, pos = torch.cat(ids), torch.cat(tidx), torch.cat(pos)
    present = torch.unique(tidx)
    if present.numel() == 0:
        raise NotApplicableError("the corpus activation store is empty")
    pick = torch.linspace(0, present.numel() - 1, min(n_texts, present.numel())).round().long().unique()
    chosen = present[pick].tolist()
    seqs = []
    for t in chosen:
        m = tidx == t
        order = torch.argsort(pos[m])
        seqs.append(ids[m][order])
    return chosen, seqs


@torch.inference_mode()
def _forward(model, batch: list[torch.Tensor], layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [B, T, V], residual at `layer` [B, T, d], mask [B, T]) for right-padded sequences."""
    input_ids, mask = right_pad(batch, model.tokenizer.pad_token_id)
    with residual_hooks(model, [layer], stop=False) as captured:
        logits = model.model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits
    return logits, captured[layer], mask


class _PassThrough(torch.nn.Module):
    """Stands in for a decoder block below a resumed pass's start: returns its residual input unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@torch.inference_mode()
def _forward_from(model, residuals: list[torch.Tensor], start: int, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_forward`'s outputs from each text's residual at index `start` [n, d] (collection stored it): the residual
    enters as the backbone's input embedding and blocks 0..start-1 pass it through, so only blocks start.. and the
    head run. The blocks stay in place (Gemma picks each block's attention mask by its index)."""
    n = max(len(r) for r in residuals)
    x = torch.zeros(len(residuals), n, residuals[0].shape[1], dtype=model.dtype)
    mask = torch.zeros(len(residuals), n, dtype=torch.long)
    for i, r in enumerate(residuals):
        x[i, : len(r)] = r
        mask[i, : len(r)] = 1
    blocks = model.decoder_layers()
    below = [blocks[i] for i in range(start)]
    try:
        for i in range(start):
            blocks[i] = _PassThrough()
        with residual_hooks(model, [layer], stop=False) as captured:
            logits = model.model(inputs_embeds=x.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits
    finally:
        for i, block in enumerate(below):
            blocks[i] = block
    return logits, captured[layer], mask


@dataclass
class Resume:
    """Where a model's pass over corpus texts may start: its own activation store (collection's pass over the same
    tokens) holds the residual at index `layer` of every token, so the blocks below it need not run again."""

    store: ActivationStore
    layer: int

    @classmethod
    def of(cls, store, model, layer: int) -> "Resume | None":
        """The deepest stored layer below `layer` (the residual index the pass must capture), when the store was
        collected from this model (its identity) in its dtype; None otherwise (the pass runs from the tokens)."""
        below = [L for L in store.layers if 0 < L < layer]
        m = store.manifest
        if not below or m.get("model_identity") != model.identity or m.get("dtype") != str(model.dtype).removeprefix("torch."):
            return None
        return cls(store, max(below))

    def residuals(self, texts: list[int], seqs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per text index of `texts`, the stored residual [n, d] in position order, checked against its tokens `seqs`."""
        want = {t: i for i, t in enumerate(texts)}
        rows: list[list[tuple]] = [[] for _ in texts]
        for sh in self.store.iter_shards(self.layer):
            order = torch.argsort(sh.text_idx * (int(sh.pos.max()) + 1 if len(sh.pos) else 1) + sh.pos)
            tidx, pos, ids, acts = sh.text_idx[order], sh.pos[order], sh.token_id[order], sh.acts[order]
            bounds = torch.nonzero(torch.diff(tidx, prepend=tidx[:1] - 1)).flatten().tolist() + [len(tidx)]
            for b0, b1 in zip(bounds[:-1], bounds[1:]):
                i = want.get(int(tidx[b0]))
                if i is not None:
                    rows[i].append((pos[b0:b1], ids[b0:b1], acts[b0:b1]))
        out = []
        for i, parts in enumerate(rows):
            pos = torch.cat([p for p, _, _ in parts]) if parts else torch.zeros(0, dtype=torch.long)
            order = torch.argsort(pos)
            ids = torch.cat([t for _, t, _ in parts])[order] if parts else pos
            if not torch.equal(ids, seqs[i].to(ids.dtype)) or not torch.equal(pos[order], torch.arange(len(pos))):
                raise ValueError(f"activation store {self.store.root}: text {texts[i]} does not hold the pass's tokens "
                                 "at every position (its collection is not this pass's corpus)")
            out.append(torch.cat([a for _, _, a in parts])[order])
        return out


def output_diff(ctx: PairContext, n_texts: int = 16, batch_size: int = 8, layer: int | None = None,
                threads: int | str | None = "auto") -> OutputDiff:
    """The shared pass (cached); `threads` as for the crosscoders ("auto": core/env.py pick_threads)."""
    from ...core.env import cpu_threads

    with cpu_threads(threads, ctx.device):
        return _output_diff(ctx, n_texts, batch_size, layer)


def _output_diff(ctx: PairContext, n_texts: int, batch_size: int, layer: int | None) -> OutputDiff:
    check_shared_vocabulary(ctx)
    layer = final_layer(ctx) if layer is None else int(layer)
    key = (ctx.model_a.identity, ctx.model_b.identity, str(ctx.corpus.a.root), n_texts, layer,
           str(ctx.model_a.dtype), str(ctx.model_b.dtype))
    if key in _CACHE:
        return _CACHE[key]
    t0 = time.time()
    chosen, seqs = token_sequences(ctx, n_texts)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("text_idx", "pos", "token_id", "kl", "top_diff", "gain_ids", "gain_vals", "hid_a", "hid_b")}
    prob_gain = None
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths per batch: less padding
    for start in tqdm(range(0, len(order), batch_size), desc="output pass (both models)", unit="batch",
                      disable=not ctx.progress, leave=False):
        rows = order[start : start + batch_size]
        batch = [seqs[i] for i in rows]
        la, ha, mask = _forward(ctx.model_a, batch, layer)
        lb, hb, _ = _forward(ctx.model_b, batch, layer)
        for r, i in enumerate(rows):
            n = int(mask[r].sum())
            if n < 2:
                continue
            sl = slice(1, n)
            lpa = torch.log_softmax(la[r, sl].float(), -1)
            lpb = torch.log_softmax(lb[r, sl].float(), -1)
            pa, pb = lpa.exp(), lpb.exp()
            d = lpb - lpa
            parts["kl"].append((pb * d).sum(-1).clamp(min=0))
            # rank by the raw logit difference (the same order as d: log_softmax only shifts each position), which
            # is exactly 0 for a token whose logit did not move; d itself carries rounding noise of ~1e-6 that
            # differs by CPU instruction set and would let arbitrary unmoved tokens past the median
            raw = lb[r, sl].float() - la[r, sl].float()
            tv, ti = raw.topk(TOP_K, dim=-1)
            # a token counts only if its gain beats the position's median gain: tokens whose logits did not
            # move relative to the rest all tie at the median and are no evidence (-1 = empty slot)
            med = raw[:, :: max(1, raw.shape[1] // 1024)].median(dim=-1, keepdim=True).values  # ~1k-token sample: cheap
            parts["top_diff"].append(torch.where(tv > med, ti, torch.full_like(ti, -1)))
            gv, gi = (pb - pa).topk(TOP_GAIN, dim=-1)
            parts["gain_ids"].append(gi)
            parts["gain_vals"].append(gv)
            g = (pb - pa).sum(0)
            prob_gain = g if prob_gain is None else prob_gain + g
            parts["hid_a"].append(ha[r, sl].float().cpu())
            parts["hid_b"].append(hb[r, sl].float().cpu())
            parts["text_idx"].append(torch.full((n - 1,), chosen[i], dtype=torch.long))
            parts["pos"].append(torch.arange(1, n))
            parts["token_id"].append(batch[r][1:n])
    if prob_gain is None:
        raise NotApplicableError("no audit corpus with at least two tokens")
    out = OutputDiff(layer=layer, prob_gain=prob_gain.cpu(), n_texts=len(seqs), seconds=time.time() - t0,
                     **{k: torch.cat([t.cpu() for t in v]) for k, v in parts.items()})
    _CACHE.clear()
    _CACHE[key] = out
    return out


@dataclass
class ResponseGains:
    """`response_gains`: per text with at least one response token, in corpus order."""

    layer: int
    text_idx: list[int]
    token_ids: list[torch.Tensor]  # [n] the text's tokens
    start: list[int]  # first response position (>= 1)
    gain: list[torch.Tensor]  # [n] log p_B(x_t | x_<t) - log p_A(x_t | x_<t); 0 at position 0 (no prediction)
    diff_mean: torch.Tensor  # [texts, d] mean of h_B - h_A at `layer` over the response positions
    norm_a: torch.Tensor  # [texts] mean |h_A| there
    diff_norm: torch.Tensor  # [texts] mean |h_B - h_A| there
    n_texts: int  # texts run (with or without a response)
    seconds: float


@dataclass
class ResponsePasses:
    """`response_passes`: several models' passes over the corpus texts with a response, in corpus order; `gains`
    contrasts one model with others."""

    layer: int
    text_idx: list[int]
    token_ids: list[torch.Tensor]  # [n] the text's tokens
    start: list[int]  # first response position (>= 1)
    logprobs: list[list[torch.Tensor]]  # [model][text] log p(x_t | x_<t), t = 1..n-1
    hidden: list[list[torch.Tensor]]  # [model][text] the residual at `layer` over the response positions
    n_texts: int  # texts run (with or without a response)
    seconds: float

    def gains(self, plus: int, minus: list[int]) -> ResponseGains:
        """Model `plus` against model `minus[0]` (B against A: `response_gains`), or against the mean of several models
        (log-probabilities and residuals averaged per token; the gain, diff and norm_a are then against that mean)."""

        def rest(parts: list[list[torch.Tensor]], t: int) -> torch.Tensor:
            return parts[minus[0]][t] if len(minus) == 1 else torch.stack([parts[j][t] for j in minus]).mean(0)

        gains, diff_mean, norm_a, diff_norm = [], [], [], []
        for t, ids in enumerate(self.token_ids):
            gain = torch.zeros(len(ids))
            gain[1:] = self.logprobs[plus][t] - rest(self.logprobs, t)
            gains.append(gain)
            h_rest = rest(self.hidden, t)
            d = self.hidden[plus][t] - h_rest
            diff_mean.append(d.mean(0))
            norm_a.append(h_rest.norm(dim=1).mean())
            diff_norm.append(d.norm(dim=1).mean())
        return ResponseGains(layer=self.layer, text_idx=self.text_idx, token_ids=self.token_ids, start=self.start,
                             gain=gains, diff_mean=torch.stack(diff_mean), norm_a=torch.stack(norm_a),
                             diff_norm=torch.stack(diff_norm), n_texts=self.n_texts, seconds=self.seconds)


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[t] | <t) for t = 1..n-1 from one sequence's logits [n, V]."""
    lg = logits[:-1].float()
    return lg.gather(1, ids[1:, None].to(lg.device)).squeeze(1) - torch.logsumexp(lg, dim=-1)


def response_gains(ctx: PairContext, n_texts: int | None = None, batch_size: int = 8, layer: int | None = None,
                   threads: int | str | None = "auto", resume: bool = True) -> ResponseGains:
    """The pass of `logprob_diff` over `n_texts` corpus texts (None: all; the same texts and token ids as
    `output_diff`), `threads` as there. Each model's side of the pass is cached (`_side_pass`): in a suite most
    pairs share model A, which then runs once. `resume`: each model's pass starts from its own store's residuals
    (`Resume`) where it can."""
    from ...core.env import cpu_threads

    check_shared_vocabulary(ctx)
    layer = final_layer(ctx) if layer is None else int(layer)
    stores = [ctx.corpus.a, ctx.corpus.b] if resume and not ctx.corpus.aligned else None
    with cpu_threads(threads, ctx.device):
        return response_passes([ctx.model_a, ctx.model_b], ctx.corpus.a, n_texts, batch_size, layer,
                               ctx.progress, stores).gains(1, [0])


def response_passes(models: list, store, n_texts: int | None, batch_size: int, layer: int,
                    progress: bool = False, stores: list | None = None) -> ResponsePasses:
    """Each model over `n_texts` texts of `store` (None: all; evenly spaced, its token ids; the models share that
    tokenizer, and the first one's chat template says where a response starts), each model's pass cached
    (`_side_pass`). `stores`: the models' activation stores of the same texts and tokens (row-aligned with
    `store`); each model's pass resumes from the one collected from it (`Resume`), and where one model has none,
    every pass runs from the tokens (as with None). Threads are the
    caller's (`cpu_threads`)."""
    from .chat import chat_header, response_start

    t0 = time.time()
    chosen, seqs = store_sequences(store, store.n_texts if n_texts is None else int(n_texts))
    header = chat_header(models[0].tokenizer)
    starts = [response_start(s, header) for s in seqs]
    keep = [i for i in range(len(seqs)) if starts[i] < len(seqs[i])]  # texts with a response
    if not keep:
        raise NotApplicableError("no audit corpus text with a response token")
    corpus = (str(store.root), tuple(chosen), layer, batch_size)
    # a model resumes from whichever store is its own (a model diffed against itself: both from one store); all models
    # resume or none does, so two models' passes always run the same blocks
    resumes = [next((r for r in (Resume.of(s, m, layer) for s in stores or ()) if r), None) for m in models]
    if None in resumes:
        resumes = [None] * len(models)
    sides = [_side_pass(m, seqs, starts, keep, layer, batch_size, corpus, progress, r, chosen)
             for m, r in zip(models, resumes)]
    return ResponsePasses(layer=layer, text_idx=[chosen[i] for i in keep], token_ids=[seqs[i] for i in keep],
                          start=[starts[i] for i in keep], logprobs=[[lp[i] for i in keep] for lp, _ in sides],
                          hidden=[[h[i] for i in keep] for _, h in sides], n_texts=len(seqs), seconds=time.time() - t0)


def response_text_scores(rg: ResponseGains) -> TextScores:
    """`rank_texts`' input from a contrast's per-token gains: a text's score is its mean gain over the response tokens;
    the logit-lens scale is the mean |diff| per response token."""
    resp = [g[s:] for g, s in zip(rg.gain, rg.start)]
    scores = torch.stack([g.mean() for g in resp])
    n_resp = sum(g.numel() for g in resp)
    diff_norm = float((rg.diff_norm * torch.tensor([g.numel() for g in resp])).sum()) / n_resp
    common = {"texts": float(rg.n_texts), "scored_texts": float(len(resp)), "response_tokens": float(n_resp),
              "seconds_forward": rg.seconds}
    return TextScores(layer=rg.layer, text_idx=rg.text_idx, scores=scores,
                      ids=[t[s:] for t, s in zip(rg.token_ids, rg.start)], values=resp, common=common,
                      scale=diff_norm or 1.0, diff_mean=rg.diff_mean, norm_a=rg.norm_a)


# The most recent (model, corpus) passes, oldest first: the current pair's two, and earlier ones while they fit in
# SIDES_BYTES (a suite's analog pair reads two organisms whose passes its planted pairs already made)
_SIDES: dict[tuple, tuple[dict, dict]] = {}
SIDES_BYTES = 1 << 30


def _side_bytes(side: tuple[dict, dict]) -> int:
    return sum(t.numel() * t.element_size() for part in side for t in part.values())


@torch.inference_mode()
def _side_pass(model, seqs: list[torch.Tensor], starts: list[int], keep: list[int], layer: int, batch_size: int,
               corpus: tuple, progress: bool = False, resume: Resume | None = None,
               text_idx: list[int] | None = None) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """One model over the texts `keep`: per text the log-probability of each actual token (positions 1..n-1) and the
    residual at `layer` over its response positions. Batches are the same for either model (longest texts first),
    so a cached pass is bit-identical to a fresh one. With `resume` (and the texts' store indices `text_idx`) the
    pass starts from the stored residuals at `resume.layer` instead of the tokens: the same values up to float
    rounding, for about half the blocks on SmolLM2 (collection stores the middle layer)."""
    key = (model.identity, str(model.dtype), corpus, resume.layer if resume else None)
    if key in _SIDES:
        _SIDES[key] = _SIDES.pop(key)  # most recent last
        return _SIDES[key]
    lp, hid = {}, {}
    order = sorted(keep, key=lambda i: -len(seqs[i]))  # similar lengths per batch: less padding
    stored = dict(zip(order, resume.residuals([text_idx[i] for i in order], [seqs[i] for i in order]))) if resume else {}
    for b0 in tqdm(range(0, len(order), batch_size), desc=f"log-probs {model.name}", unit="batch", disable=not progress,
                   leave=False):
        rows = order[b0 : b0 + batch_size]
        batch = [seqs[i] for i in rows]
        if resume:
            logits, h, mask = _forward_from(model, [stored.pop(i) for i in rows], resume.layer, layer)
        else:
            logits, h, mask = _forward(model, batch, layer)
        for r, i in enumerate(rows):
            n = int(mask[r].sum())
            lp[i] = _token_logprobs(logits[r, :n], batch[r][:n]).cpu()
            hid[i] = h[r, starts[i] : n].float().cpu()
        del logits, h  # [B, T, V] logits: one batch at a time
    _SIDES[key] = (lp, hid)
    while len(_SIDES) > 2 and sum(_side_bytes(v) for v in _SIDES.values()) > SIDES_BYTES:
        _SIDES.pop(next(iter(_SIDES)))
    return lp, hid


def group_direction(ctx: PairContext, token_ids: list[int], side: str = "b") -> torch.Tensor:
    """Residual direction (model B, or A with side="a") that raises the logits of `token_ids` relative to the average
    token under the logit lens: g * (mean_v W_U[v] - mean over the vocabulary of W_U), g the final norm's gain."""
    model = ctx.model_a if side == "a" else ctx.model_b
    w_u = unembedding(model)
    if not token_ids:
        return torch.zeros(w_u.shape[1])
    w = w_u[torch.tensor(token_ids)].mean(0) - _vocab_mean(w_u)
    return (w * final_norm_gain(model)).cpu()


_MEAN: dict[tuple, torch.Tensor] = {}


def _vocab_mean(w_u: torch.Tensor) -> torch.Tensor:
    key = (w_u.data_ptr(), tuple(w_u.shape))
    if key not in _MEAN:
        _MEAN.clear()
        _MEAN[key] = w_u.mean(0)
    return _MEAN[key]


def decode_tokens(ctx: PairContext, ids: list[int]) -> list[str]:
    tok = ctx.model_b.tokenizer
    return [tok.decode([i]) for i in ids]


# ----------------------------------------------------------------------------- text findings

MAD_TO_SD = 1.4826  # MAD x this estimates the standard deviation of normally distributed scores


@dataclass
class TextScores:
    """Per scored text (the input of `rank_texts`): its score and the values (B - A: a log-probability gain, or a
    KL >= 0) of its scored tokens, in model B's vocabulary; `ids_a`/`values_a` hold model A's own tokens and values
    where the tokenizers differ (side-a findings name A's tokens then). `diff_mean`/`norm_a` (the mean h_B - h_A and
    mean |h_A| at `layer` over the scored positions) are None where the models share no activation space: every
    readout is then the side's own logit lens, read from that model alone at its `layer_a`/`layer`."""

    layer: int
    text_idx: list[int]
    scores: torch.Tensor  # [texts]
    ids: list[torch.Tensor]
    values: list[torch.Tensor]
    common: dict  # info shared by every finding; __post_init__ adds robust_center's median_score and robust_sd
    scale: float  # norm of a logit-lens direction (the mean |h_B - h_A|, or 1)
    diff_mean: torch.Tensor | None = None
    norm_a: torch.Tensor | None = None
    layer_a: int | None = None
    ids_a: list[torch.Tensor] | None = None
    values_a: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.common["median_score"], self.common["robust_sd"] = robust_center(self.scores)


@dataclass(frozen=True)
class TextFindingOptions:
    prefix: str  # finding ids: <prefix>:text<idx>
    n_findings: int
    n_tokens: int
    flag_z: float
    readout_tokens: int
    excerpt_chars: int
    value: str = "gain"  # what a token's value is: info["<value>s"] = [{"token", "<value>"}]


def robust_center(scores: torch.Tensor) -> tuple[float, float]:
    """(median, 1.4826 x MAD) of the texts' scores, the centre and spread of `rank_texts`' robust z (`TextScores`
    keeps both in `common`): the planted contexts are a few outliers among many texts, and a fine-tune shifts every
    text a little; the median and MAD ignore both, where a mean and standard deviation would be pulled by the very
    outliers they should expose."""
    med = float(scores.median())
    return med, MAD_TO_SD * float((scores - med).abs().median())


def _top_tokens(ids: torch.Tensor, toward: torch.Tensor, values: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """The distinct tokens with the largest value toward the side (the best occurrence of each; > 0 only)."""
    token_ids, vals = [], []
    for p in torch.argsort(toward, descending=True, stable=True).tolist():
        if toward[p] <= 0 or len(token_ids) >= k:
            break
        if int(ids[p]) not in token_ids:
            token_ids.append(int(ids[p]))
            vals.append(float(values[p]))
    return token_ids, vals


def rank_texts(ctx: PairContext, ts: TextScores, o: TextFindingOptions) -> list[Finding]:
    """One finding per text, the `n_findings` largest |score| first: side b where score > 0, else a; flagged by a
    robust z of the score among all texts' (see logprob_diff.py); tokens = the text's tokens with the largest value
    toward the side; readout = the text's mean difference, or the tokens' logit lens where that vanishes or the
    models share no space."""
    scores = ts.scores
    med, spread = ts.common["median_score"], ts.common["robust_sd"]
    tok_b = ctx.model_b.tokenizer
    layer = ts.layer
    order = sorted(range(len(scores)), key=lambda i: (-abs(float(scores[i])), ts.text_idx[i]))
    out = []
    for i in order[: o.n_findings]:
        s = float(scores[i])
        side = "b" if s > 0 else "a"
        sign = 1.0 if side == "b" else -1.0
        own = side == "a" and ts.ids_a is not None  # model A's own tokens (different tokenizers)
        ids, values = (ts.ids_a[i], ts.values_a[i]) if own else (ts.ids[i], ts.values[i])
        token_ids, vals = _top_tokens(ids, sign * values, values, o.n_tokens)
        model = ctx.model_a if own else ctx.model_b
        tokens = [model.tokenizer.decode([t]) for t in token_ids]
        if ts.diff_mean is None:
            # no shared space: the tokens' logit lens in the side's model, read from that model alone
            w = group_direction(ctx, token_ids[: o.readout_tokens], side)
            ro = Readout(layer_a=ts.layer_a, layer_b=layer, kind="linear", w_a=w if side == "a" else None,
                         w_b=w if side == "b" else None, input_norm="rms")
            direction, how = w / w.norm().clamp_min(1e-12) * ts.scale, "logit_lens_one_sided"
        elif float(ts.diff_mean[i].norm()) <= 1e-6 * max(float(ts.norm_a[i]), 1e-12):
            # the residual streams agree here (e.g. only the unembedding changed): the tokens' logit lens, in the
            # side's model, read with w_side = +w as the mean-difference readout below
            w = group_direction(ctx, token_ids[: o.readout_tokens], side)
            ro = Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-sign * w, w_b=sign * w, input_norm="rms")
            direction, how = w / w.norm().clamp_min(1e-12) * ts.scale, "logit_lens"
        else:
            # one readout for both sides: (h_B - h_A) . d/|d| is high where the models differ as on this text
            d = ts.diff_mean[i]
            ro, direction, how = difference_readout(layer, d / d.norm()), sign * d, "mean_difference"
        info = {**ts.common, "text": ts.text_idx[i], "score": s, "n_response_tokens": int(ts.ids[i].numel()), "readout": how,
                f"{o.value}s": [{"token": t, o.value: v} for t, v in zip(tokens, vals)],
                "excerpt": tok_b.decode(ts.ids[i].tolist())[: o.excerpt_chars]}
        if spread > 0:
            info["robust_z"] = (s - med) / spread
        flagged = abs(s - med) > o.flag_z * spread
        out.append(Finding(id=f"{o.prefix}:text{ts.text_idx[i]}", uniqueness=abs(s), flagged=flagged, readout=ro, side=side,
                           direction=direction, direction_layer=ts.layer_a if ts.diff_mean is None and side == "a" else layer,
                           tokens=tokens, token_ids=token_ids, info=info))
    return out
