"""Top-activating audit-corpus snippets of each finding, saved with it for the reports.

A finding's readout is applied to the pair's corpus activations at its layer; the texts with the highest
token score (position 0, the attention sink, excluded) give one snippet each: a window of tokens around
the top token with every token's score, so a report can highlight them.
"""

from __future__ import annotations

import torch

from ..core import Finding
from ..core.activations import PairedActivations, TextSet
from ..core.findings import read_many


def attach_snippets(findings: list[Finding], corpus: PairedActivations, texts: TextSet, tokenizer, max_length: int,
                    k: int = 3, before: int = 12, after: int = 4) -> None:
    """Set `info["snippets"]` of each finding with a readout over both models (same tokens) at layers the corpus
    store holds: up to k {"text", "pos", "score", "tokens", "scores", "focus"} records, best first."""
    if corpus.alignment is not None:
        raise ValueError("snippets need one text's tokens per row; a cross-tokenizer corpus has aligned positions")
    ids_cache: dict[int, list[int]] = {}
    by_layer: dict[tuple[int, int], list[Finding]] = {}
    for f in findings:
        by_layer.setdefault((f.readout.layer_a, f.readout.layer_b), []).append(f)
    for (layer_a, layer_b), group in by_layer.items():
        if layer_a not in corpus.a.layers or layer_b not in corpus.b.layers:
            continue  # read at a layer the corpus store does not hold (e.g. weight_svd's modules): no snippets
        la, lb = corpus.load(layer_a, layer_b)
        sink = la.pos < 1
        # every finding of the layer in one matmul per model; rows of one text are located once, not per snippet
        scores = read_many([f.readout for f in group], la.acts, lb.acts)
        scores = torch.where(sink[:, None] | ~torch.isfinite(scores), torch.full_like(scores, float("-inf")), scores)
        text_rows: dict[int, torch.Tensor] = {}
        for j, f in enumerate(group):
            score = scores[:, j]
            out, seen = [], set()
            for row in torch.topk(score, min(len(score), 64 * k)).indices.tolist():
                t = int(la.text_idx[row])
                if t in seen or not torch.isfinite(score[row]):
                    continue
                seen.add(t)
                pos = int(la.pos[row])
                if t not in ids_cache:
                    ids_cache[t] = tokenizer(texts.texts[t], add_special_tokens=False, truncation=True,
                                             max_length=max_length).input_ids
                ids = ids_cache[t]
                lo, hi = max(0, pos - before), min(len(ids), pos + after + 1)
                if t not in text_rows:
                    text_rows[t] = (la.text_idx == t).nonzero().squeeze(1)
                rows = text_rows[t]
                rows = rows[(la.pos[rows] >= lo) & (la.pos[rows] < hi)]
                tok_scores = dict(zip(la.pos[rows].tolist(), score[rows].tolist()))
                out.append({"text": t, "pos": pos, "score": float(score[row]),
                            "tokens": [tokenizer.decode([i]) for i in ids[lo:hi]],
                            "scores": [float(tok_scores.get(p, float("nan"))) for p in range(lo, hi)], "focus": pos - lo})
                if len(out) == k:
                    break
            f.info["snippets"] = out
