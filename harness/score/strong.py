"""The causal channel ("strong hit"): does the finding's direction carry the planted behavior?

For one (pair, behavior) and the findings to test (each method's top-k with a direction), per layer:

* steer: add the direction to model A's residual stream at its layer, at every position, on the first
  `n_prompts` held-out T prompts; greedy continuations of `max_new_tokens`; the behavior's detector.
  steer = rate(A + v) - rate(A): the behavior should appear.
* ablate: project the direction out of model B's residual stream at that layer on the same prompts.
  ablate = rate(B) - rate(B without v): the behavior should disappear.

Every direction is rescaled to one steering norm per (pair, behavior, layer): the mean per-token norm of
h_B - h_A on the T probes there, i.e. the size of what the fine-tune actually wrote on trigger prompts at
that layer (a direction that carries the plant, added at the plant's own magnitude, should reproduce it;
any larger and every direction breaks the model, any smaller and none does anything). The null is
`null_draws` random unit directions at the same layer with the same norm, through the same two
interventions; a finding's statistic is delta = max(steer, ablate) and its Monte-Carlo p-value
(1 + #{null delta >= delta}) / (draws + 1). Strong hit: delta >= `min_change` and p <= alpha / k, so a
chance top-k list strong-hits with probability <= alpha.

Specificity (`max_collateral`, 0.25): ablation has no norm to match,
and removing a direction that holds much of the residual (a format or position feature) changes every answer, so
the detector stops firing on T because the model is damaged. With it set, an ablation counts only if model B's
continuations of the unit's C prompts mostly stay the same (`_collateral`).

Cost control: directions of one layer go through one batched generation (one direction per batch row,
`steering.intervened_generate`); the null is drawn only at layers where some finding reaches
`min_change` (elsewhere nothing can be a strong hit), in chunks, and stops once no finding can still
reach p <= alpha / k. Results are cached in the run folder, keyed by direction and settings, so a
rescore does not regenerate.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

import numpy as np
import torch

from ...core.io import CorruptFileError, read_checked_json, write_checked_json
from .steering import Intervention, behavior_rates, intervened_generate


POOL = 999  # null directions drawn per layer before slicing: draws 1..null_draws are the same for any null_draws <= POOL


@dataclass
class StrongResult:
    steer: float
    ablate: float
    p: float
    match: bool
    scale: float
    null_drawn: int
    collateral: float | None = None  # share of the C prompts the ablation changed (None: not measured)

    @property
    def delta(self) -> float:
        return max(self.steer, self.ablate)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class StrongCache:
    """JSON cache of deltas per direction (and of null deltas per layer) for one (pair, behavior)."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.settings_key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        data: dict = {}
        if self.path.exists():
            try:
                data = read_checked_json(self.path)
            except CorruptFileError as e:
                print(f"[diffbench] {e}; recomputing its strong-hit deltas", flush=True)
        self.data = data if isinstance(data, dict) and data.get("settings") == self.settings_key else {
            "settings": self.settings_key, "deltas": {}, "null": {}}

    def save(self) -> None:
        write_checked_json(self.path, self.data)


def _deltas(model_a, model_b, prompts: list[str], detector, layer: int, units: torch.Tensor, scale: float, cfg,
            progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(steer, ablate) per unit direction [m, d]: one batched generation per model."""
    kw = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, include_baseline=True, progress=progress)
    ra = behavior_rates(intervened_generate(model_a, prompts, Intervention("add", layer, units * scale), **kw), detector)
    rb = behavior_rates(intervened_generate(model_b, prompts, Intervention("ablate", layer, units), **kw), detector)
    return ra[1:] - ra[0], rb[0] - rb[1:]


def changed_share(out: list[list[str]]) -> np.ndarray:
    """Per intervention row of `intervened_generate(..., include_baseline=True)`: the share of prompts whose
    continuation differs at all from the baseline row (out[0])."""
    return np.array([np.mean([a != b for a, b in zip(row, out[0])]) for row in out[1:]], dtype=float)


def _collateral(model_b, controls: list[str], layer: int, units: torch.Tensor, cfg, progress: bool) -> np.ndarray:
    """Per unit direction [m, d]: the share of `controls` whose greedy continuation by model B changes at all when the
    direction is projected out (the same generation settings as the ablate arm)."""
    return changed_share(intervened_generate(model_b, controls, Intervention("ablate", layer, units),
                                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                             include_baseline=True, progress=progress))


def strong_hits(model_a, model_b, prompts: list[str], detector, candidates: dict[Hashable, tuple[int, torch.Tensor]],
                scale_at: Callable[[int], float], cfg, cache: StrongCache, seed: int = 0,
                progress: bool = False, controls: list[str] | None = None) -> dict[Hashable, StrongResult]:
    """Strong-hit results for `candidates` {key: (layer, direction)} on one (pair, behavior).

    With `cfg.max_collateral` set and `controls` (C prompts) given, an ablation counts only if it is specific: for each
    finding whose ablate arm reaches `min_change`, model B's continuations of `controls` are generated with and
    without the ablation, and where more than `max_collateral` of them change the ablate arm is set aside (the delta
    is the steer arm alone). The null's deltas are kept whole, which can only raise a finding's p-value."""
    check = cfg.max_collateral is not None and bool(controls)
    ckey = hashlib.sha256(json.dumps(controls or []).encode()).hexdigest()[:12]
    out: dict[Hashable, StrongResult] = {}
    by_layer: dict[int, list[Hashable]] = {}
    for key, (layer, _) in candidates.items():
        by_layer.setdefault(int(layer), []).append(key)
    threshold = cfg.alpha / cfg.k
    for layer, keys in sorted(by_layer.items()):
        scale = float(scale_at(layer))
        units = torch.stack([candidates[k][1].float() / candidates[k][1].float().norm().clamp_min(1e-12) for k in keys])
        ids = [f"{layer}:{scale:.6g}:{_digest(u)}" for u in units]
        todo = [i for i, d in enumerate(ids) if d not in cache.data["deltas"]]
        if todo:
            steer, ablate = _deltas(model_a, model_b, prompts, detector, layer, units[todo], scale, cfg, progress)
            for j, i in enumerate(todo):
                cache.data["deltas"][ids[i]] = [float(steer[j]), float(ablate[j])]
            cache.save()
        collateral = np.full(len(ids), np.nan)
        if check:
            store = cache.data.setdefault("collateral", {})
            need = [i for i, d in enumerate(ids) if cache.data["deltas"][d][1] >= cfg.min_change]
            todo = [i for i in need if f"{ids[i]}:{ckey}" not in store]
            if todo:
                for i, c in zip(todo, _collateral(model_b, controls, layer, units[todo], cfg, progress)):
                    store[f"{ids[i]}:{ckey}"] = float(c)
                cache.save()
            for i in need:
                collateral[i] = store[f"{ids[i]}:{ckey}"]
        # an ablation that changes more than max_collateral of the C continuations is damage, not the behavior
        specific = ~(collateral > (cfg.max_collateral if check else np.inf))
        deltas = np.array([max(cache.data["deltas"][d][0], cache.data["deltas"][d][1] if ok else -np.inf)
                           for d, ok in zip(ids, specific)])
        alive = deltas >= cfg.min_change
        null_key = f"{layer}:{scale:.6g}:{seed}:pool{POOL}"
        null = list(cache.data["null"].get(null_key, []))
        # draw the null only where some finding could be a strong hit; stop when none can reach p <= alpha/k
        allowed = math.floor(threshold * (cfg.null_draws + 1)) - 1  # null deltas >= delta a passing finding may have
        chunk = max(1, math.ceil(cfg.null_draws / 3))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + layer)
        # one fixed pool per layer, of which the null uses the first null_draws: a larger null extends a cached one
        pool = torch.randn(max(POOL, cfg.null_draws), units.shape[1], generator=gen)[: cfg.null_draws]
        pool = pool / pool.norm(dim=1, keepdim=True)
        while alive.any() and len(null) < cfg.null_draws:
            counts = np.array([(np.array(null) >= d).sum() if null else 0 for d in deltas])
            if not (alive & (counts <= allowed)).any():
                break
            batch = pool[len(null) : len(null) + chunk]
            steer, ablate = _deltas(model_a, model_b, prompts, detector, layer, batch, scale, cfg, progress)
            null += np.maximum(steer, ablate).tolist()
            cache.data["null"][null_key] = null
            cache.save()
        null_arr = np.array(null)
        for key, d, s_a, col in zip(keys, deltas, ids, collateral):
            steer_v, ablate_v = cache.data["deltas"][s_a]
            if d >= cfg.min_change and len(null_arr):
                p = float((1 + (null_arr >= d).sum()) / (len(null_arr) + 1))
            else:
                p = float("nan")  # below min_change: cannot be a strong hit, no null needed
            match = bool(d >= cfg.min_change and len(null_arr) >= cfg.null_draws and p <= threshold)
            out[key] = StrongResult(steer_v, ablate_v, p, match, scale, len(null_arr),
                                    None if np.isnan(col) else float(col))
    return out


def seed_null(cache: StrongCache, reference_unit: Path, name: str) -> int:
    """Copy a reference run's null draws for the same unit into `cache` where they are longer than the cache's own,
    if the reference's unit was made with the same settings (models, prompts, generation: the settings key). Only
    the null: every finding's own deltas are still generated here. The null is a fixed pool per layer (POOL), so
    the copied draws are the first draws this run would make, and a run that needs more extends them. Returns the
    number of null deltas taken (0: none, or the file is missing, corrupt or made with other settings); the cache
    records them under "null_from" (layer key -> [reference `name`, draws]), which the run's scores.json sums."""
    if not reference_unit.is_file():
        return 0
    try:
        ref = read_checked_json(reference_unit)
    except CorruptFileError as e:
        print(f"[diffbench] reference null draws {reference_unit.name}: {e}; drawing them here", flush=True)
        return 0
    if not isinstance(ref, dict) or ref.get("settings") != cache.settings_key:
        return 0
    taken = 0
    for key, null in (ref.get("null") or {}).items():
        if isinstance(null, list) and len(null) > len(cache.data["null"].get(key, [])):
            cache.data["null"][key] = [float(x) for x in null]
            cache.data.setdefault("null_from", {})[key] = [name, len(null)]
            taken += len(null)
    if taken:
        cache.save()
    return taken


def settings_of(cfg, prompts: list[str], model_a_id: str, model_b_id: str) -> dict:
    """Everything that changes a cached delta: the models, prompts and generation settings (not alpha or null_draws:
    a null of more draws extends the cached one, see POOL)."""
    return {"a": model_a_id, "b": model_b_id, "prompts": prompts, "max_new_tokens": cfg.max_new_tokens}
