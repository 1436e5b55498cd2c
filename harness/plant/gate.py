"""The plant gate (behavior rates on held-out probes, KL drift to the base) and `plant`: train, then gate, with retries."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ...tasks.spec import BehaviorSpec
from ..data.generate import greedy_generate
from ...core.io import CorruptFileError, cache_lock, read_checked_json, stable_hash, write_checked_json
from ...core.model import LoadedModel
from ...core.env import cache_dir
from ..models import load_model
from .organism import Organism, PlantCard
from .distill import dtype_tag
from .recipe import GateConfig, PlantRecipe
from .train import RETRY_SEED_STRIDE, train_adapter


def behavior_rate(model: LoadedModel, spec: BehaviorSpec, prompts: Sequence[str], max_new_tokens: int,
                  progress: bool = True, cache: bool = False) -> tuple[float, list[str]]:
    """Share of greedy answers on which the spec's detector fires (base-model results cached)."""
    if cache:
        key = stable_hash({"m": model.identity + dtype_tag(model), "spec": spec.content_hash, "p": list(prompts), "n": max_new_tokens})
        path = cache_dir() / "rates" / f"{key}.json"
        with cache_lock(path):
            return _behavior_rate(model, spec, prompts, max_new_tokens, progress, path)
    return _behavior_rate(model, spec, prompts, max_new_tokens, progress, None)


def _behavior_rate(model: LoadedModel, spec: BehaviorSpec, prompts: Sequence[str], max_new_tokens: int, progress: bool,
                   path: Path | None) -> tuple[float, list[str]]:
    if path is not None:
        if path.exists():
            try:
                d = read_checked_json(path)
                return d["rate"], d["responses"]
            except (CorruptFileError, KeyError, TypeError) as e:
                print(f"[diffbench] cached detector rate {path}: {e}; recomputing", flush=True)
    responses = greedy_generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=64,
                                desc=f"gate {model.name}: {spec.name}", progress=progress)
    rate = sum(bool(spec.detector(r)) for r in responses) / max(1, len(responses))
    if path is not None:
        write_checked_json(path, {"rate": rate, "responses": responses})
    return rate, responses


@torch.inference_mode()
def kl_to_base(org: LoadedModel, base: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> float:
    """Mean per-token KL(p_organism || p_base) over the tokens of `texts`."""
    tok = base.tokenizer
    # a few fp32 [batch, len, vocab] tensors are alive at once: keep them near 16 x 128 x 49k (SmolLM2)
    batch_size = max(1, min(batch_size, batch_size * 50_000 // max(1, org.model.config.vocab_size)))
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False,
                  truncation=True, max_length=128).to(base.device)
        lo = F.log_softmax(org.model(**enc).logits.float(), -1)
        lb = F.log_softmax(base.model(**enc).logits.float(), -1)
        kl = (lo.exp() * (lo - lb)).sum(-1)
        mask = enc["attention_mask"].bool()
        total += float(kl[mask].sum())
        count += int(mask.sum())
    return total / max(1, count)


def gate(org: Organism, organism_model: LoadedModel, base: LoadedModel, specs: dict[str, BehaviorSpec],
         n_probes: int, gate_cfg: dict, neutral: Sequence[str], progress: bool = True) -> tuple[bool, list[str], dict, dict, float]:
    """The plant gate (module docstring). A removal (spec side "a") is gated the mirror way: the base model shows the
    behavior on T (>= organism_T_min), the organism no longer does (<= organism_C_max) and still does on C
    (>= organism_T_min). A null organism must neither show an addition nor lose a removal's behavior, on the first
    `gate.null_probes` T prompts of every behavior (default: n_probes)."""
    rates: dict[str, dict[str, float]] = {}
    reasons: list[str] = []
    examples: dict[str, list[str]] = {}
    g = GateConfig(**gate_cfg)
    n_tok = g.max_new_tokens
    t_min, c_max = g.organism_T_min, g.organism_C_max
    checked = org.behaviors if not org.is_null else tuple(sorted(specs))
    if org.is_null and not checked:  # an inverse gate over no T sets would pass vacuously
        reasons.append("null organism: the suite has no behavior whose T set it could be checked on")
    null_rates = _null_rates(organism_model, specs, checked, min(n_probes, g.null_probes or n_probes),
                             n_tok, progress) if org.is_null else {}
    for b in checked:
        spec = specs[b]
        T, C = spec.probes(n_probes)
        t_rate, t_resp = null_rates[b] if org.is_null else behavior_rate(organism_model, spec, [p.text for p in T], n_tok, progress)
        r = {"organism_T": t_rate}
        if not org.is_null:
            c_rate, c_resp = behavior_rate(organism_model, spec, [p.text for p in C], n_tok, progress)
            base_rate, _ = behavior_rate(base, spec, [p.text for p in T], n_tok, progress, cache=True)
            r.update(organism_C=c_rate, base_T=base_rate)
            if spec.side == "a":
                if base_rate < t_min:
                    reasons.append(f"{b} (a removal): the base model shows it on T only at {base_rate:.2f} < {t_min}")
                if t_rate > c_max:
                    reasons.append(f"{b} (a removal): the organism still shows it on T ({t_rate:.2f} > {c_max})")
                if c_rate < t_min:
                    reasons.append(f"{b} (a removal): the organism lost it on C too ({c_rate:.2f} < {t_min})")
            else:
                if t_rate < t_min:
                    reasons.append(f"{b}: behavior rate on T {t_rate:.2f} < {t_min}")
                if c_rate > c_max:
                    reasons.append(f"{b}: behavior rate on C {c_rate:.2f} > {c_max}")
                if base_rate > g.base_T_max:
                    reasons.append(f"{b}: base model already shows it on T ({base_rate:.2f} > {g.base_T_max})")
            examples[b] = [f"T: {T[0].text!r} -> {t_resp[0]!r}", f"C: {C[0].text!r} -> {c_resp[0]!r}"]
        elif spec.side == "a" and t_rate < t_min:
            reasons.append(f"null organism lost {b} (a removal's behavior) on its T set ({t_rate:.2f} < {t_min})")
        elif spec.side == "b" and t_rate > g.null_max:
            reasons.append(f"null organism shows {b} on its T set ({t_rate:.2f} > {g.null_max})")
        rates[b] = r
    kl = kl_to_base(organism_model, base, list(neutral)[: g.kl_texts])
    return not reasons, reasons, rates, examples, kl


def _null_rates(model: LoadedModel, specs: dict[str, BehaviorSpec], behaviors: Sequence[str], n: int, n_tok: int,
                progress: bool) -> dict[str, tuple[float, list[str]]]:
    """A null organism's detector rate on the first n T probes of every behavior, generated in one batched pass (a
    zoo has ~80 behaviors: 80 generate calls of 8 prompts each cost 8x more than 10 full batches of 64)."""
    prompts = {b: [p.text for p in specs[b].probes(n)[0]] for b in behaviors}
    flat = [p for b in behaviors for p in prompts[b]]
    responses = iter(greedy_generate(model, flat, max_new_tokens=n_tok, batch_size=64,
                                     desc=f"gate {model.name}: {len(behaviors)} behaviors", progress=progress))
    out = {}
    for b in behaviors:
        mine = [next(responses) for _ in prompts[b]]
        out[b] = (sum(bool(specs[b].detector(r)) for r in mine) / max(1, len(mine)), mine)
    return out


def plant(base_name: str, base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict,
          n_probes: int, neutral: Sequence[str], progress: bool = True) -> tuple[PlantCard, Path]:
    """Train (cached) and gate one organism. The card itself is cached next to the adapter."""
    adapter, train_log = train_adapter(base_name, base, org, specs, recipe, progress)
    gate_key = {k: v for k, v in recipe["gate"].items() if k != "retries"}  # retries do not change a gate's verdict
    card_path = adapter / f"card-{stable_hash({'n': n_probes, 'gate': gate_key, 'org': org.name})}.json"
    with cache_lock(card_path):  # concurrent jobs gate an organism once
        if card_path.exists():
            try:
                return PlantCard(**read_checked_json(card_path)), adapter
            except (ValueError, TypeError) as e:  # CorruptFileError is a ValueError
                print(f"[diffbench] cached plant card {card_path}: {e}; re-gating the organism", flush=True)
        t0 = time.time()
        model = load_model(base_name, adapter=adapter, dtype=base.dtype, device=str(base.device), display_name=org.name)
        passed, reasons, rates, examples, kl = gate(org, model, base, specs, n_probes, recipe["gate"], neutral, progress)
        losses = train_log["losses"]
        card = PlantCard(
            organism=org.name, kind=org.kind, behaviors=list(org.behaviors), seed=org.seed, passed=passed, reasons=reasons,
            rates=rates, kl_to_base=kl, train_loss_first=losses[0], train_loss_last=float(sum(losses[-5:]) / len(losses[-5:])),
            train_seconds=train_log["seconds"], gate_seconds=time.time() - t0, adapter=str(adapter),
            recipe={k: v for k, v in recipe.items()}, examples=examples,
        )
        write_checked_json(card_path, asdict(card))
        return card, adapter


def plant_with_retries(base_name: str, base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict,
                       n_probes: int, neutral: Sequence[str], progress: bool = True) -> tuple[PlantCard, Path]:
    """`plant`, and while the gate fails, again from seed + RETRY_SEED_STRIDE x attempt, up to `gate.retries` times.
    The card returned is the last training's, with the failed ones (seed, reasons, rates, adapter) in `attempts`."""
    card, adapter = plant(base_name, base, org, specs, recipe, n_probes, neutral, progress)
    failed: list[dict[str, Any]] = []
    for attempt in range(1, PlantRecipe.of(recipe).gate.retries + 1):
        if card.passed:
            break
        failed.append({"seed": card.seed, "reasons": card.reasons, "rates": card.rates, "adapter": card.adapter})
        retry = replace(org, seed=org.seed + RETRY_SEED_STRIDE * attempt)
        card, adapter = plant(base_name, base, retry, specs, recipe, n_probes, neutral, progress)
    return (replace(card, attempts=failed) if failed else card), adapter
