"""N-way crosscoder: the Dedicated Feature Crosscoder's hard partition generalised to N models of one base.

One BatchTopK dictionary over the N members' residual streams at one layer (default the middle one), each member
scaled by one scalar to mean norm sqrt(d) on its training rows. Latents are ordered: shared (every member) |
one exclusive section per member (`excl_frac` of the latents each) | one section per chosen subset (`subset_frac`
each; `subsets`, by default every pair of members when N <= 4). A latent has encoder and decoder weights only for
the members of its section (`NWayCrosscoder`'s blocks), and trains on the crosscoders' loop (`train.py`: BatchTopK,
auxiliary loss on dead latents, inference threshold fitted on calibration rows).

Findings: every non-shared latent with activation mass on the training rows, attributed to its section's members,
ranked by mass per training token (uniqueness, as the DFC), flagged if it fired on the held-out rows. Its readout is
the latent itself on raw activations (exact: w of each owner = its encoder row times its scale), reading the owner
(exclusive: `reads` = (m, m), w_b only) or the two owners (`reads` = the pair, w_a and w_b); its direction and
tokens are the first owner's decoder row in raw units and its logit lens. Subset sections have two members for now:
a latent of three or more owners needs a readout of three or more models, which `Readout` is not.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from ...core import NEVER_FIRES, NotApplicableError, Readout
from ...core.env import bf16_flag, cpu_threads
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method, subset_name
from ..crosscoder._lib.batchtopk_base import BatchTopKConfig
from ..crosscoder._lib.evaluate import latent_mass
from ..crosscoder._lib.method import SPLIT_SEED, STREAM_FIELDS, shared_fields, subsample
from ..crosscoder._lib.nway import NWayCrosscoder, evaluate_nway
from ..crosscoder._lib.train import TrainConfig, init_from_data, train

log = logging.getLogger(__name__)

ALL_PAIRS_MAX_N = 4  # `subsets: null` gives every pair a section up to this many members (N = 6 would add 15)


@dataclass
class NWayCrosscoderConfig(BatchTopKConfig):
    """BatchTopKConfig's training and data options (its relative-norm, Latent Scaling and `layer_b` options do not
    apply; `backend` runs the torch path, `data_init_frac` must stay 0)."""

    excl_frac: float = 0.05  # share of the latents exclusive to each member
    subset_frac: float = 0.025  # share of the latents of each subset section
    subsets: list[list[int]] | None = None  # member subsets with a section each; None: every pair when N <= 4, else none


@dataclass
class GroupData:
    train: list[torch.Tensor]  # normalised [n, d] per member, row-aligned
    eval: list[torch.Tensor]
    scales: list[float]  # raw * scale = normalised
    layer: int


def prepare_group_data(ctx: GroupContext, cfg: NWayCrosscoderConfig) -> GroupData:
    """Every member's rows at the layer: position 0 dropped (`drop_bos`), rows above `outlier_factor` x the median
    norm in any member dropped, texts split into training and evaluation rows with the pair crosscoders' fixed seed,
    at most `max_tokens` / `max_eval_tokens` rows, each member scaled to mean norm sqrt(d) on its training rows."""
    layer = ctx.layer_or_middle(cfg.layer)
    acts = ctx.corpus.load(layer)
    keep = acts[0].pos > 0 if cfg.drop_bos else torch.ones_like(acts[0].pos, dtype=torch.bool)
    if cfg.outlier_factor:
        for la in acts:
            norms = la.acts.float().norm(dim=1)
            keep &= norms <= cfg.outlier_factor * norms[keep].median()
    xs = [la.acts[keep].float() for la in acts]
    text_idx = acts[0].text_idx[keep]
    if xs[0].shape[0] < 16:
        raise NotApplicableError(f"only {xs[0].shape[0]} usable activation rows at layer {layer}")
    texts = torch.unique(text_idx)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    eval_texts = texts[torch.randperm(texts.numel(), generator=g)[: max(1, round(cfg.eval_frac * texts.numel()))]]
    is_eval = torch.isin(text_idx, eval_texts)
    if texts.numel() < 2 or is_eval.all() or is_eval.sum() < 8:  # too few texts to split by: split rows
        is_eval = torch.rand(text_idx.numel(), generator=g) < cfg.eval_frac
    tr, ev = (~is_eval).nonzero().squeeze(1), is_eval.nonzero().squeeze(1)
    tr = tr[torch.randperm(tr.numel(), generator=torch.Generator().manual_seed(ctx.seed))[: cfg.max_tokens]]
    ev = ev[torch.randperm(ev.numel(), generator=torch.Generator().manual_seed(SPLIT_SEED))[: cfg.max_eval_tokens]]
    scales = [math.sqrt(x.shape[1]) / float(x[tr].norm(dim=1).mean()) for x in xs]
    return GroupData([(x[tr] * s).to(ctx.device) for x, s in zip(xs, scales)],
                     [(x[ev] * s).to(ctx.device) for x, s in zip(xs, scales)], scales, layer)


@register_nway_method
class NWayCrosscoderMethod(NWayMethod):
    name = "nway_crosscoder"
    stochastic = True
    Config = NWayCrosscoderConfig
    cfg: NWayCrosscoderConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.cfg.data != "stored":
            raise ValueError(f"{self.name}: data={self.cfg.data!r} is not supported; the N-way crosscoder trains on stored rows")
        for key in STREAM_FIELDS:  # options of the two-model crosscoders' streamed training: not part of this config
            self.config.pop(key)
        self.last_metrics: dict[str, Any] = {}
        self.crosscoder: NWayCrosscoder | None = None
        self.data: GroupData | None = None

    def subsets(self, n_models: int) -> list[tuple[int, ...]]:
        if self.cfg.subsets is None:
            return list(itertools.combinations(range(n_models), 2)) if 3 <= n_models <= ALL_PAIRS_MAX_N else []
        out = [tuple(sorted(set(s))) for s in self.cfg.subsets]
        for s, raw in zip(out, self.cfg.subsets):
            if len(s) != 2 or len(s) != len(raw) or not all(0 <= m < n_models for m in s):
                raise ValueError(f"{self.name}: subset {raw} must be two distinct members of 0..{n_models - 1} (a latent "
                                 "of three or more owners needs a readout of three or more models, not built yet)")
        if len(set(out)) != len(out) or (n_models == 2 and out):
            raise ValueError(f"{self.name}: subsets {self.cfg.subsets} repeat a subset or name the shared section")
        return out

    def sections(self, n_models: int, width: int) -> list[tuple[tuple[int, ...], int]]:
        """(members, size) in latent order: shared | exclusive per member | subsets."""
        excl = [((m,), int(round(self.cfg.excl_frac * width))) for m in range(n_models)]
        subs = [(s, int(round(self.cfg.subset_frac * width))) for s in self.subsets(n_models)]
        n_shared = width - sum(size for _, size in excl + subs)
        if n_shared <= 0:
            raise ValueError(f"{self.name}: exclusive and subset sections take all {width} latents; lower excl_frac or subset_frac")
        return [(tuple(range(n_models)), n_shared), *excl, *subs]

    def trained_width(self) -> int:
        """dict_size capped at steps x batch_size / samples_per_latent, as the BatchTopK crosscoder."""
        c = self.cfg
        if c.steps <= 0 or not c.samples_per_latent:
            return c.dict_size
        return max(1, min(c.dict_size, int(c.steps * c.batch_size // float(c.samples_per_latent))))

    def fit(self, ctx: GroupContext) -> tuple[NWayCrosscoder, GroupData, dict[str, Any]]:
        c = self.cfg
        if c.backend == "triton" or c.data_init_frac:
            raise ValueError(f"{self.name}: the Triton backend and data-initialised latents are not built for N models")
        data = prepare_group_data(ctx, c)
        cc = NWayCrosscoder(data.train[0].shape[1], ctx.n, self.sections(ctx.n, self.trained_width()), seed=ctx.seed,
                            score_norm=c.score_norm).to(ctx.device)
        init_from_data(cc, data.train, seed=ctx.seed, data_frac=0.0)  # b_dec = each member's mean row
        tc = TrainConfig(**shared_fields(TrainConfig, c))
        tc.sparsity, tc.seed, tc.backend, tc.threads, tc.progress = "batchtopk", ctx.seed, "torch", None, ctx.progress
        tc.bf16 = bf16_flag(c.bf16, ctx.device)
        res = train(cc, data.train, tc)
        cc.eval()
        ev = evaluate_nway(cc, data.eval)
        tr = evaluate_nway(cc, subsample(data.train, c.max_stat_tokens, ctx.seed))
        metrics: dict[str, Any] = {f"ev_{m}": e for m, e in enumerate(ev["ev"])}
        metrics.update(l0=ev["l0"], dead_frac=ev["dead_frac"], train_seconds=res.seconds, steps=res.steps,
                       train_tokens=data.train[0].shape[0], eval_tokens=data.eval[0].shape[0], dict_size=cc.n,
                       threshold=float(cc.threshold), layer=data.layer, k=c.k)
        log.info("%s on %s: %s", self.name, ctx.group_id, metrics)
        return cc, data, {**metrics, "_fires_eval": ev["fires"], "_fires_train": tr["fires"], "_n_train_sample": tr["n_tokens"]}

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        torch.manual_seed(ctx.seed)
        with cpu_threads(self.cfg.threads, ctx.device) as n_threads:
            cc, data, metrics = self.fit(ctx)
            metrics["threads"] = n_threads
            self.crosscoder, self.data = cc, data
            findings = self.select(ctx, cc, data, metrics)
        self.last_metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
        return findings

    def select(self, ctx: GroupContext, cc: NWayCrosscoder, data: GroupData, metrics: dict[str, Any]) -> list[GroupFinding]:
        n_train = max(1, data.train[0].shape[0])
        rows: list[tuple[int, float, float]] = []  # (latent, uniqueness, mass)
        for sec in cc.sections[1:]:  # every section but the shared one
            latents = torch.arange(sec.lo, sec.hi)
            if latents.numel():
                mass = latent_mass(cc, data.train, latents, mode="threshold")
                rows += [(i, float(mv) / n_train, float(mv)) for i, mv in zip(latents.tolist(), mass.tolist()) if mv > 0]
        rows = sorted(rows, key=lambda r: -r[1])[: self.cfg.max_findings]
        first = [cc.section_of(i).members[0] for i, _, _ in rows]
        directions = [(cc.dec_row(m, i).detach().float() / data.scales[m]).cpu() for (i, _, _), m in zip(rows, first)]
        lenses: dict[int, tuple[list[int], list[str]]] = {}
        for m in sorted(set(first)):  # one batched logit lens per member
            idx = [j for j, fm in enumerate(first) if fm == m]
            lenses.update(zip(idx, ctx.logit_lens_many(torch.stack([directions[j] for j in idx]), m, k=20)))
        sel_norms, bias = cc.selection_norms(), cc.readout_bias()
        base = {k: float(v) for k, v in metrics.items() if not k.startswith("_") and isinstance(v, (int, float))}
        out = []
        for j, (i, uniq, mass) in enumerate(rows):
            members = cc.section_of(i).members
            w = {m: (cc.enc_row(m, i).detach().float() * data.scales[m]).cpu() for m in members}
            dn = float(sel_norms[i])
            readout = Readout(layer_a=data.layer, layer_b=data.layer, kind="linear",
                              w_a=w[members[0]] if len(members) == 2 else None, w_b=w[members[-1]], bias=float(bias[i]),
                              act="relu", threshold=float(cc.threshold) / dn if dn > 0 else NEVER_FIRES)
            info: dict[str, Any] = {**base, "latent": float(i), "section": subset_name(members), "mass": mass,
                                    "mass_per_token": uniq, "fires_eval": float(metrics["_fires_eval"][i]),
                                    "freq_train": float(metrics["_fires_train"][i]) / max(1, int(metrics["_n_train_sample"]))}
            for m in members:
                info[f"dec_norm_{m}"] = float(cc.dec_row(m, i).detach().norm())
            if len(members) == 2:  # do the owners write one direction?
                info["dec_cos"] = float(torch.nn.functional.cosine_similarity(
                    cc.dec_row(members[0], i).detach(), cc.dec_row(members[1], i).detach(), dim=0))
            ids, toks = lenses[j]
            out.append(GroupFinding(
                id=f"{self.name}:{ctx.group_id}:L{data.layer}:latent{i}", uniqueness=uniq,
                flagged=bool(metrics["_fires_eval"][i] > 0), readout=readout, side="b" if len(members) == 1 else "both",
                direction=directions[j], direction_layer=data.layer, tokens=toks, token_ids=ids, info=info,
                models=members, reads=(members[0], members[-1])))
        return out
