"""Logit-difference token mining: which tokens does model B systematically prefer over model A?

Both models run on `n_texts` corpus texts (`outputs.output_diff`, shared with `kl_diff`). At every
position >= 1 the `top_k` tokens of logits_B - logits_A are counted; the count matrix (texts x
tokens, restricted to the `max_vocab` most counted tokens seen at >= `min_count` positions) is
factorised by NMF (scikit-learn, `n_groups` components, nndsvda init, `random_state` = the seed, so
it is deterministic); every token joins the component that explains most of its count, so the
groups partition the counted tokens; a group's tokens are ordered by that contribution (at most
`group_size`, the finding's `tokens`). A token counts at a position only if its gain exceeds the
position's median gain (tokens whose logits did not move relative to the rest tie there).

Uniqueness = the largest position frequency (share of positions at which the token is in the
top-k; chance is top_k / vocabulary) among the group's tokens; flagged when it is >= `flag_freq`
(our rule).

Readout (the scoring protocol reads findings from residual activations, not logits): the
logit-lens logit difference of the group at the final residual layer (`layer`, default n_layers - 1,
the last residual index the activation store holds, the input of the last block): with
w = g * (mean of W_U over the group's first `readout_tokens` tokens - mean of W_U over the
vocabulary), g the final norm's gain (model B's weights for both models),
`Readout(w_a=-w, w_b=w, input_norm="rms")` = w . rms_norm(h_B) - w . rms_norm(h_A): how much more
B's residual stream favours the group than A's (0 with model B replaced by model A). Direction =
w's unit vector times the mean difference norm at that layer. The score stage collects probe
activations at that layer for scoring.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, PairContext, Readout, register_method
from ._shared.outputs import TOP_K, decode_tokens, group_direction, output_diff


@dataclass
class LogitDiffTokensConfig(MethodConfig):
    n_texts: int = 16  # corpus texts (the forward pass is shared with kl_diff)
    top_k: int = 20  # tokens per position among the top of logits_B - logits_A
    n_groups: int = 10  # NMF components over the texts x tokens count matrix
    max_vocab: int = 512
    min_count: int = 2
    group_size: int = 20
    readout_tokens: int = 5
    flag_freq: float = 0.25  # flag when a group token is in the top-k at >= this share of positions
    layer: int | None = None  # None = n_layers - 1
    batch_size: int = 8
    threads: int | str | None = "auto"


@register_method
class LogitDiffTokens(Method):
    name = "logit_diff_tokens"

    Config = LogitDiffTokensConfig
    cfg: LogitDiffTokensConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        if not 1 <= self.cfg.top_k <= TOP_K:
            raise ValueError(f"top_k must be in 1..{TOP_K}")

    def find(self, ctx: PairContext) -> list[Finding]:
        from sklearn.decomposition import NMF

        c = self.cfg
        od = output_diff(ctx, c.n_texts, c.batch_size, c.layer, c.threads)
        layer, n = od.layer, od.n
        top = od.top_diff[:, : c.top_k]
        texts, text_row = torch.unique(od.text_idx, return_inverse=True)
        flat = top.reshape(-1)
        rows = text_row.repeat_interleave(top.shape[1])
        valid = flat >= 0  # empty slots: no gain above the position's median
        flat, rows = flat[valid], rows[valid]
        counts = torch.bincount(flat, minlength=int(od.prob_gain.numel())).float()
        keep = torch.nonzero(counts >= c.min_count).squeeze(1)
        if keep.numel() == 0:
            return []
        keep = keep[torch.argsort(counts[keep], descending=True)[: c.max_vocab]]
        col = torch.full((counts.numel(),), -1, dtype=torch.long)
        col[keep] = torch.arange(keep.numel())
        sel = col[flat] >= 0
        mat = torch.zeros(texts.numel(), keep.numel())
        mat.index_put_((rows[sel], col[flat][sel]), torch.ones(int(sel.sum())), accumulate=True)
        n_comp = max(1, min(c.n_groups, mat.shape[0], mat.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on tiny matrices
            nmf = NMF(n_components=n_comp, init="nndsvda", random_state=int(ctx.seed), max_iter=400)
            wt = nmf.fit_transform(mat.numpy().astype(np.float64))
        h = nmf.components_
        contrib = wt.sum(0)[:, None] * h  # [groups, tokens]: each component's share of each token's count
        owner = contrib.argmax(0)  # a partition: every token joins the group that explains most of its count
        freq = counts / n
        mean_diff_norm = float((od.hid_b - od.hid_a).norm(dim=1).mean()) or 1.0
        out = []
        for g in range(n_comp):
            members = [int(j) for j in np.nonzero((owner == g) & (contrib[g] > 0))[0]]
            members.sort(key=lambda j: (-contrib[g, j], j))
            if not members:
                continue
            ids = [int(keep[j]) for j in members[: c.group_size]]
            r = c.readout_tokens
            u = max(float(freq[i]) for i in ids)
            w = group_direction(ctx, ids[:r])
            unit = w / w.norm().clamp_min(1e-12)
            out.append(Finding(
                id=f"logit_group{g}", uniqueness=u, flagged=u >= c.flag_freq,
                readout=Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-w, w_b=w.clone(), input_norm="rms"),
                side="b", direction=unit * mean_diff_norm, direction_layer=layer,
                tokens=decode_tokens(ctx, ids), token_ids=ids,
                info={"top_freq": u, "group_mass": float(contrib[g, members].sum()) / max(1.0, float(mat.sum())), "group_tokens": float(len(members)),
                      "positions": float(n), "texts": float(od.n_texts), "top_k": float(c.top_k),
                      "chance_freq": c.top_k / float(counts.numel()), "seconds_forward": od.seconds}))
        return sorted(out, key=lambda f: -f.uniqueness)  # NMF's component order means nothing
