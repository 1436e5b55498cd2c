"""What a finding's direction does: greedy continuations of corpus prompts before and after adding it.

For each method's top `k` findings with a direction: the direction is added at its residual layer, at every
position (harness/score/steering.py), to model A when the two models share an activation space (so a reader sees
B's difference appear in A, as in the scorer's causal channel), or else to the finding's own model (amplified).
It is scaled to the size of what differs between the models there: the mean per-token norm of h_B - h_A at
that layer over `SCALE_TEXTS` corpus texts (shared space), or half the target model's mean residual norm
(no shared space). The prompts are the user turns of the texts the method's top findings are about (a finding
that names its corpus text, as logprob_diff's do) or fire most on (their top snippets), so the before/after
shows the finding in its own contexts; every finding of a method is
shown on the same prompts, in one batched generation per (model, layer).
"""

from __future__ import annotations

import torch

from ...core.batching import right_pad
from ...core.capture import capture_residuals
from ...core.model import LoadedModel
from ..score.steering import Intervention, intervened_generate
from ..data.store import tokenize_texts
from .usercorpus import Document

SCALE_TEXTS = 16


def _residual_norm(ma: LoadedModel, mb: LoadedModel | None, docs: list[Document], layer: int) -> float:
    """Mean per-token |h_B - h_A| at `layer` (both models, same tokens), or mean |h_A| when mb is None."""
    tok = ma.tokenizer
    ids = [torch.tensor(x) for x in tokenize_texts(tok, [d.render(tok)[0] for d in docs[:SCALE_TEXTS]], max_length=128)]
    input_ids, mask = right_pad(ids, tok.pad_token_id)
    ha = capture_residuals(ma, input_ids.to(ma.device), mask.to(ma.device), [layer])[layer].float().cpu()
    keep = mask.bool().clone()
    keep[:, 0] = False  # the attention sink
    if mb is None:
        return float(ha[keep].norm(dim=-1).mean())
    hb = capture_residuals(mb, input_ids.to(mb.device), mask.to(mb.device), [layer])[layer].float().cpu()
    return float((hb - ha)[keep].norm(dim=-1).mean())


def _prompt(doc: Document) -> str:
    if doc.prompt is not None:
        return doc.prompt
    return " ".join(doc.response.split()[:30])  # a plain document: its opening words as the user turn


def steering_evidence(runs: list, ma: LoadedModel, mb: LoadedModel, docs: list[Document], paired, k: int, n_prompts: int,
                      max_new_tokens: int, progress: bool) -> dict[str, dict[str, dict]]:
    """{method key: {finding id: {"model", "layer", "scale", "rows": [{"prompt", "before", "after", "changed"}], "effect"}}}."""
    shared = paired.alignment is None and ma.hidden_size == mb.hidden_size and ma.n_layers == mb.n_layers
    scales: dict[tuple[str, int], float] = {}
    out: dict[str, dict[str, dict]] = {}
    for r in runs:
        chosen = [f for f in r.findings if f.direction is not None and f.direction_layer is not None][:k]
        if not chosen:
            continue
        # the findings' own texts first (a finding about one text, as logprob_diff's, names it), then their top snippets'
        texts = [f.info["text"] for f in chosen if isinstance(f.info.get("text"), int) and 0 <= f.info["text"] < len(docs)]
        texts = list(dict.fromkeys(texts + [s["text"] for f in chosen for s in (f.info.get("snippets") or [])[:1]]))
        texts += [i for i in range(len(docs)) if docs[i].prompt is not None and i not in texts]
        prompts = [_prompt(docs[i]) for i in texts[:n_prompts]]
        by_target: dict[tuple[str, int], list] = {}
        for f in chosen:
            side = "a" if f.side == "a" else "b"
            target = ("a" if side == "b" else "b") if shared else side
            by_target.setdefault((target, int(f.direction_layer)), []).append(f)
        out[r.key] = {}
        for (target, layer), group in by_target.items():
            model = ma if target == "a" else mb
            if not 1 <= layer <= model.n_layers - 1:
                continue
            if (target, layer) not in scales:
                scales[(target, layer)] = _residual_norm(ma, mb, docs, layer) if shared else 0.5 * _residual_norm(model, None, docs, layer)
            scale = scales[(target, layer)]
            vecs = torch.stack([f.direction.float() / f.direction.float().norm().clamp_min(1e-12) * scale for f in group])
            gens = intervened_generate(model, prompts, Intervention("add", layer, vecs), max_new_tokens=max_new_tokens,
                                       batch_size=64, include_baseline=True, progress=progress)
            for j, f in enumerate(group):
                rows = [{"prompt": p, "before": gens[0][i], "after": gens[j + 1][i], "changed": gens[0][i] != gens[j + 1][i]}
                        for i, p in enumerate(prompts)]
                out[r.key][f.id] = {"model": f"model {target.upper()} ({model.name})", "layer": layer, "scale": f"{scale:.3g}",
                                    "rows": rows, "effect": effect(rows)}
    return out


def effect(rows: list[dict]) -> str:
    """The steering's effect in words: "no effect" where every continuation stayed the same (before == after)."""
    changed = sum(bool(r["changed"]) for r in rows)
    if not changed:
        return "no effect: adding the direction left every continuation unchanged"
    return f"changed {changed} of {len(rows)} continuations"
