"""Top-activating audit-corpus snippets of each finding, saved with it for the reports.

A finding's readout is applied to the pair's corpus activations at its layer; the texts with the highest
token score (position 0, the attention sink, excluded) give one snippet each: a window of tokens around
the top token with every token's score, so a report can highlight them.

For models with different tokenizers a row is an aligned position (i_a, i_b) of one text, not one token
both models read. The snippet then shows the text in the tokens of the model the finding belongs to (its
`side`: "a" model A's, "b" and "both" model B's), as that model's store holds them (its own chat template
around the shared content): its tokens at aligned positions carry their row's score, the others (a word's
inner pieces, template text) have no score (NaN, saved as null), which the reports render unhighlighted.
"""

from __future__ import annotations

import torch

from ...core import Finding
from ...core.activations import ActivationStore, PairedActivations, TextSet
from ...core.findings import read_many


def attach_snippets(findings: list[Finding], corpus: PairedActivations, texts: TextSet | None, tokenizer, max_length: int,
                    k: int = 3, before: int = 12, after: int = 4, tokenizer_b=None) -> None:
    """Set `info["snippets"]` of each finding with a readout over both models at layers the corpus store holds: up to
    k {"text", "pos", "score", "tokens", "scores", "focus"} records, best first.

    Same tokens (no `corpus.alignment`): `texts` tokenized by `tokenizer` (up to `max_length`). Cross-tokenizer pair:
    the tokens of the finding's side from that model's store, decoded by `tokenizer` (A) or `tokenizer_b` (B);
    `pos` and `focus` are positions in that tokenization and `texts` is not read."""
    cross = corpus.alignment is not None
    if cross and tokenizer_b is None:
        raise ValueError("snippets of a cross-tokenizer corpus need model B's tokenizer (tokenizer_b)")
    ids_cache: dict[tuple[str, int], list[int]] = {}
    store_ids: dict[str, list[torch.Tensor]] = {}

    def ids_of(side: str, t: int) -> list[int]:
        if (side, t) not in ids_cache:
            if not cross:
                ids_cache[side, t] = tokenizer(texts.texts[t], add_special_tokens=False, truncation=True,
                                               max_length=max_length).input_ids
            else:  # the tokens the model read (its store checked them against its tokenizer when aligned)
                if side not in store_ids:
                    store_ids[side] = _ids_per_text(corpus.a if side == "a" else corpus.b, corpus.n_texts)
                ids_cache[side, t] = store_ids[side][t].tolist()
        return ids_cache[side, t]

    by_layer: dict[tuple[int, int], list[Finding]] = {}
    for f in findings:
        by_layer.setdefault((f.readout.layer_a, f.readout.layer_b), []).append(f)
    for (layer_a, layer_b), group in by_layer.items():
        if layer_a not in corpus.a.layers or layer_b not in corpus.b.layers:
            continue  # read at a layer the corpus store does not hold (e.g. weight_svd's modules): no snippets
        la, lb = corpus.load(layer_a, layer_b)
        sink = (la.pos < 1) | (lb.pos < 1)  # an aligned row may sit at position 0 of either model (same rows otherwise)
        # every finding of the layer in one matmul per model; rows of one text are located once, not per snippet
        scores = read_many([f.readout for f in group], la.acts, lb.acts)
        scores = torch.where(sink[:, None] | ~torch.isfinite(scores), torch.full_like(scores, float("-inf")), scores)
        text_rows: dict[int, torch.Tensor] = {}  # text_idx is the same on both sides of a row
        for j, f in enumerate(group):
            score = scores[:, j]
            # same tokens: model A's rows are both models'; across tokenizers: the positions of the finding's model
            side = "b" if cross and f.side != "a" else "a"
            lx, tok = (la, tokenizer) if side == "a" else (lb, tokenizer_b)
            out, seen = [], set()
            for row in torch.topk(score, min(len(score), 64 * k)).indices.tolist():
                t = int(lx.text_idx[row])
                if t in seen or not torch.isfinite(score[row]):
                    continue
                seen.add(t)
                pos = int(lx.pos[row])
                ids = ids_of(side, t)
                lo, hi = max(0, pos - before), min(len(ids), pos + after + 1)
                if t not in text_rows:
                    text_rows[t] = (lx.text_idx == t).nonzero().squeeze(1)
                rows = text_rows[t]
                rows = rows[(lx.pos[rows] >= lo) & (lx.pos[rows] < hi)]
                tok_scores = dict(zip(lx.pos[rows].tolist(), score[rows].tolist()))  # tokens without a row: NaN
                out.append({"text": t, "pos": pos, "score": float(score[row]),
                            "tokens": [tok.decode([i]) for i in ids[lo:hi]],
                            "scores": [float(tok_scores.get(p, float("nan"))) for p in range(lo, hi)], "focus": pos - lo})
                if len(out) == k:
                    break
            f.info["snippets"] = out


def _ids_per_text(store: ActivationStore, n_texts: int) -> list[torch.Tensor]:
    """Token ids of each text of a store in position order (its rows hold every position 0..n-1 of each text)."""
    text_idx, pos, token_id = store.index()
    order = torch.argsort(text_idx * (int(pos.max()) + 1) + pos)
    return list(token_id[order].split(torch.bincount(text_idx, minlength=n_texts).tolist()))
