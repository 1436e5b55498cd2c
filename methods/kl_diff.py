"""Per-token KL divergence KL(p_B || p_A) of the next-token distributions on audit corpus.

Both models run with their LM heads on `n_texts` corpus texts (`outputs.output_diff`, shared with
`logit_diff_tokens`). Findings:

* `kl:tokens`: the tokens whose probability grew most, summed over all positions (sum of p_B - p_A);
  contexts = every position.
* `kl:top`: the top-KL contexts (the `top_frac` of positions with the largest KL, at least
  `min_contexts`); direction = their mean difference h_B - h_A at the final residual layer;
  tokens = the tokens whose probability grew most in those contexts.
* `kl:gain:<token>`: the top-KL contexts grouped by the token whose probability grew most at each;
  for the `n_groups` groups with the largest KL mass (at least `min_group` contexts): direction =
  the group's mean difference; tokens = that token, then the logit lens of the direction.

Uniqueness = the finding's KL mass per corpus position (sum of KL over its contexts / all
positions, nats), so `kl:tokens` carries the pair's mean KL; flagged when the mean KL over the
finding's contexts is >= `flag_kl` nats (our rule).

Readout (the scoring protocol reads findings from residual activations, not logits): the issue's
"readout = per-token KL" would need both models' unembeddings (V x d each, too large to save per
finding) or a scorer that reruns the models on the probes. We use instead the per-token difference
h_B - h_A projected on the finding's unit direction at the final residual layer (`layer`, default
n_layers - 1: the last residual index the activation store holds, the input of the last block) — a
linear stand-in for "B's output moves the way it moved in the top-KL contexts", identically 0 with
model B replaced by model A. For `kl:tokens` the direction is the logit-lens direction of its top
`readout_tokens` tokens (as in `logit_diff_tokens`), read from RMS-normalised activations, i.e. the
logit-lens logit difference of those tokens; so do the other findings where the mean difference
vanishes (the residual streams agree there, e.g. only the unembedding changed); `info["readout"]`
says which. The score stage collects probe activations at that layer for scoring.
"""

from __future__ import annotations


import torch

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, PairContext, Readout, register_method
from ..core.lens import lens_ids
from ._shared.difference import difference_readout
from ._shared.outputs import decode_tokens, group_direction, output_diff


def tokens_by_gain(od, rows: torch.Tensor, k: int) -> list[int]:
    """Tokens with the largest summed p_B - p_A over the given positions (from each position's top gains)."""
    ids, vals = od.gain_ids[rows].reshape(-1), od.gain_vals[rows].reshape(-1)
    uniq, inv = torch.unique(ids, return_inverse=True)
    tot = torch.zeros(uniq.numel()).index_add_(0, inv, vals)
    order = torch.argsort(tot, descending=True)[:k]
    return [int(uniq[i]) for i in order if tot[i] > 0]


@dataclass
class KLDiffConfig(MethodConfig):
    n_texts: int = 16  # corpus texts both models run on, with their LM heads (shared with logit_diff_tokens)
    top_frac: float = 0.05  # share of positions with the largest KL that form the top contexts
    min_contexts: int = 16
    n_groups: int = 9  # top contexts grouped by the token whose probability grew most there
    min_group: int = 2
    flag_kl: float = 0.5  # flag when the mean KL over the finding's contexts >= this (nats)
    readout_tokens: int = 5
    layer: int | None = None  # residual index of the directions/readouts; None = n_layers - 1
    batch_size: int = 8
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads (every core under the diffbench command)


@register_method
class KLDiff(Method):
    name = "kl_diff"

    Config = KLDiffConfig
    cfg: KLDiffConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        od = output_diff(ctx, c.n_texts, c.batch_size, c.layer, c.threads)
        layer, n = od.layer, od.n
        diff = od.hid_b - od.hid_a
        total = float(od.kl.sum())
        common = {"mean_kl": total / n, "positions": float(n), "texts": float(od.n_texts), "seconds_forward": od.seconds}
        out = []

        def finding(fid: str, rows: torch.Tensor, direction: torch.Tensor, readout: Readout, token_ids: list[int], info: dict) -> Finding:
            mass = float(od.kl[rows].sum())
            mean = mass / max(1, rows.numel())
            return Finding(id=fid, uniqueness=mass / n, flagged=mean >= c.flag_kl and rows.numel() >= c.min_group,
                           readout=readout, side="b", direction=direction, direction_layer=layer,
                           tokens=decode_tokens(ctx, token_ids), token_ids=token_ids,
                           info={**common, "contexts": float(rows.numel()), "context_mean_kl": mean, **info})

        r = c.readout_tokens
        scale = float(diff.norm(dim=1).mean()) or 1.0

        def lens_readout(token_ids: list[int]) -> tuple[torch.Tensor, Readout]:
            w = group_direction(ctx, token_ids[:r])
            ro = Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-w, w_b=w.clone(), input_norm="rms")
            return w / w.norm().clamp_min(1e-12) * scale, ro

        def mean_diff_readout(rows: torch.Tensor, token_ids: list[int]) -> tuple[torch.Tensor, Readout, str]:
            d = diff[rows].mean(0)
            if float(d.norm()) <= 1e-6 * max(float(od.hid_a[rows].norm(dim=1).mean()), 1e-12):
                # the residual streams agree here (e.g. only the unembedding changed): use the tokens' lens
                return (*lens_readout(token_ids), "logit_lens")
            return d, difference_readout(layer, d / d.norm()), "mean_difference"

        # tokens whose probability grew most over all positions
        every = torch.arange(n)
        grown = [int(i) for i in torch.argsort(od.prob_gain, descending=True)[:20] if od.prob_gain[i] > 0]
        direction, ro = lens_readout(grown)
        out.append(finding("kl:tokens", every, direction, ro, grown,
                           {"top_prob_gain_per_position": float(od.prob_gain[grown[0]]) / n if grown else 0.0, "readout": "logit_lens"}))

        # top-KL contexts
        n_top = min(n, max(c.min_contexts, int(round(c.top_frac * n))))
        top = torch.argsort(od.kl, descending=True)[:n_top]
        top_tokens = tokens_by_gain(od, top, 20)
        direction, ro, how = mean_diff_readout(top, top_tokens)
        out.append(finding("kl:top", top, direction, ro, top_tokens, {"kl_threshold": float(od.kl[top].min()), "readout": how}))

        # top-KL contexts grouped by the token whose probability grew most there
        gain_tok = od.gain_ids[top, 0]
        groups = []
        for t in torch.unique(gain_tok).tolist():
            rows = top[gain_tok == t]
            if rows.numel() >= c.min_group:
                groups.append((float(od.kl[rows].sum()), int(t), rows))
        groups.sort(key=lambda g: (-g[0], g[1]))
        for _, t, rows in groups[: c.n_groups]:
            direction, ro, how = mean_diff_readout(rows, [t])
            ids = lens_ids(ctx.model_b, direction, k=20)[0]
            token_ids = [t] + [i for i in ids if i != t][:19]
            out.append(finding(f"kl:gain:{t}", rows, direction, ro, token_ids, {"gain_token": float(t), "readout": how}))
        return out
