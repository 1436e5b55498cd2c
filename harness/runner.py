"""The pipeline: plant -> collect -> diff -> score -> report, each stage cached and resumable.

Every stage can run alone (`stages=[collect]`); a stage that needs an earlier
stage's products gets them from the caches (planting and collection are
content-addressed), and `score`/`report` read the run folder's saved findings.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..methods import load_all_methods
from ..methods.base import METHODS, NotApplicableError, PairContext, load_findings, rank, save_findings
from .generate import chat_prompt
from .io import read_json, write_csv, write_json
from .models import LoadedModel, default_device, load_model
from .plant import PlantCard, neutral_texts, plant
from .scoring import MatchRecord, PairResult, ProbeActs, ScoringConfig, compute_metrics, keyword_token_ids, match_finding
from .store import PairedActivations, TextSet, collect
from .suite import BASE, Pair, Suite
from .tracking import Tracker

log = logging.getLogger(__name__)

STAGES = ("plant", "collect", "diff", "score", "report")


def say(msg: str) -> None:
    print(f"[diffbench] {msg}", flush=True)


class Runner:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.suite = Suite.from_config(cfg.suite)
        self.recipe = OmegaConf.to_container(cfg.plant, resolve=True)
        self.scoring = ScoringConfig.from_dict(OmegaConf.to_container(cfg.scoring, resolve=True))
        self.base_name = cfg.model.name
        self.device = default_device() if cfg.device == "auto" else cfg.device
        self.dtype = cfg.dtype
        self.progress = bool(cfg.progress)
        self.collect_cfg = OmegaConf.to_container(cfg.collect, resolve=True)
        self.methods = OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else {}
        load_all_methods()
        for key, mcfg in self.methods.items():
            if not isinstance(mcfg, dict) or "name" not in mcfg:
                raise ValueError(f"method config {key!r} needs a `name` (the registered method) and optional `params`")
            METHODS.get(mcfg["name"])  # unknown names fail now, not after planting
        self._models: dict[str, LoadedModel] = {}
        self._adapters: dict[str, Path] = {}
        self.cards: dict[str, PlantCard] = {}
        self._probe_cache: dict[tuple, ProbeActs] = {}
        self._probe_extra_layers: dict[tuple[str, str], set[int]] = {}  # (model, behavior) -> layers beyond collect.layers
        self._probe_extra_keys: list[tuple] = []  # cache keys of those layers, oldest first (bounded, see probe_acts)

    # -- models -------------------------------------------------------------------
    def model(self, name: str) -> LoadedModel:
        if name not in self._models:
            if name == BASE:
                self._models[name] = load_model(self.base_name, dtype=self.dtype, device=self.device)
            else:
                if name not in self._adapters:
                    self.stage_plant(only=[name])
                base = self.model(BASE)
                self._models[name] = load_model(self.base_name, adapter=self._adapters[name], dtype=base.dtype,
                                                device=str(base.device), display_name=name)
            if len(self._models) > 8:  # bounded memory: drop the oldest organism
                oldest = next(k for k in self._models if k != BASE and k != name)
                del self._models[oldest]
        return self._models[name]

    def neutral(self) -> TextSet:
        return TextSet.of(f"neutral{self.suite.n_neutral}", neutral_texts(self.model(BASE), self.suite.n_neutral, self.progress))

    # -- stage: plant ----------------------------------------------------------------
    def stage_plant(self, only: list[str] | None = None) -> None:
        base = self.model(BASE)
        neutral = self.neutral().texts
        names = only or list(self.suite.organisms)
        t0 = time.time()
        for name in names:
            org = self.suite.organisms[name]
            card, adapter = plant(self.base_name, base, org, self.suite.specs, self.recipe, self.suite.n_probes, neutral, self.progress)
            self.cards[name] = card
            self._adapters[name] = adapter
            write_json(self.run_dir / "plant_cards" / f"{name}.json", asdict(card))
            status = "PASS" if card.passed else "FAIL"
            rates = "; ".join(f"{b}: T={r['organism_T']:.2f}" + (f" C={r['organism_C']:.2f} base={r['base_T']:.2f}" if "organism_C" in r else "")
                              for b, r in card.rates.items() if "organism_C" in r or r["organism_T"] > 0) or "no behavior on any T set"
            say(f"plant {name:34s} {status}  {rates}  KL={card.kl_to_base:.3f}  train {card.train_seconds:.0f}s")
            for reason in card.reasons:
                say(f"    gate: {reason}")
        if only is None:
            say(f"planting done in {time.time() - t0:.0f}s; cards in {self.run_dir / 'plant_cards'}")

    def ensure_cards(self) -> None:
        missing = [n for n in self.suite.organisms if n not in self.cards]
        if missing:
            self.stage_plant(only=missing)

    def pair_status(self, pair: Pair) -> str:
        self.ensure_cards()
        for name in (pair.a, pair.b):
            if name != BASE and not self.cards[name].passed:
                return f"excluded: organism {name} failed its plant gate ({'; '.join(self.cards[name].reasons)})"
        return "ok"

    # -- stage: collect --------------------------------------------------------------
    def layers_for(self, model: LoadedModel) -> list[int]:
        return sorted({model.layer_index(l) for l in self.collect_cfg["layers"]})

    def _collect(self, model: LoadedModel, texts: TextSet):
        c = self.collect_cfg
        return collect(model, texts, self.layers_for(model), batch_size=c["batch_size"], max_length=c["max_length"],
                       shard_tokens=c["shard_tokens"], progress=self.progress)

    def probe_set(self, behavior: str, tokenizer) -> tuple[TextSet, np.ndarray, list[str], list[str]]:
        T, C = self.suite.specs[behavior].probes(self.suite.n_probes)
        users = [p.text for p in T] + [p.text for p in C]
        texts = [chat_prompt(tokenizer, u) for u in users]
        labels = np.array([1] * len(T) + [0] * len(C))
        return TextSet.of(f"probe-{behavior}-{self.suite.n_probes}", texts), labels, texts, users

    def paired_neutral(self, pair: Pair) -> PairedActivations:
        ts = self.neutral()
        a, b = self.model(pair.a), self.model(pair.b)
        return PairedActivations(self._collect(a, ts), self._collect(b, ts), len(ts))

    def stage_collect(self) -> None:
        t0 = time.time()
        roots = set()
        for pair in self.suite.pairs:
            if self.pair_status(pair) != "ok":
                continue
            p = self.paired_neutral(pair)
            roots |= {p.a.root, p.b.root}
            for b in pair.behaviors:
                for name in (pair.a, pair.b):
                    m = self.model(name)
                    roots.add(self._collect(m, self.probe_set(b, m.tokenizer)[0]).root)
        say(f"collected activations in {time.time() - t0:.0f}s; {len(roots)} stores under {Path(next(iter(roots))).parent if roots else '-'}")
        for r in sorted(roots):
            log.debug("store %s", r)

    # -- stage: diff -----------------------------------------------------------------
    def finding_path(self, method_key: str, pair: Pair, seed: int) -> Path:
        return self.run_dir / "findings" / method_key / f"{pair.id}@s{seed}"

    def seeds_for(self, method_name: str) -> list[int]:
        return self.suite.method_seeds if METHODS.get(method_name).stochastic else [0]

    def stage_diff(self) -> None:
        for key, mcfg in self.methods.items():
            cls = METHODS.get(mcfg["name"])
            for pair in self.suite.pairs:
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed)
                    status_path = path.with_suffix(".status.json")
                    previous = read_json(status_path)["status"] if status_path.exists() else None
                    if previous == "not_applicable" or (previous == "ok" and path.with_suffix(".json").exists()):
                        continue  # resume: done before (failed and excluded runs are retried)
                    result = PairResult(key, seed, pair.id, pair.kind, pair.behaviors, "ok")
                    status = self.pair_status(pair)
                    if status != "ok":
                        result.status, result.error = "excluded", status
                        write_json(status_path, asdict(result))
                        continue
                    t0 = time.time()
                    try:
                        ma, mb = self.model(pair.a), self.model(pair.b)
                        ctx = PairContext(pair.id, ma, mb, self.paired_neutral(pair), self.layers_for(mb), seed=seed,
                                          device=self.device, work_dir=path.parent)
                        torch.manual_seed(seed)
                        findings = rank(cls(**(mcfg.get("params") or {})).find(ctx))
                        save_findings(path, findings, {"method": key, "pair": pair.id, "seed": seed})
                        result.n_findings = len(findings)
                        result.n_flagged = sum(f.flagged for f in findings)
                    except NotApplicableError as e:
                        result.status, result.error = "not_applicable", str(e)
                    except Exception as e:  # a crashing method is recorded, the run goes on
                        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
                        log.error("method %s failed on %s: %s", key, pair.id, traceback.format_exc())
                        say(f"method {key} FAILED on {pair.id}: {result.error}")
                    result.seconds = time.time() - t0
                    write_json(status_path, asdict(result))
                    if result.status == "ok":
                        say(f"diff {key:22s} {pair.id:44s} seed {seed}: {result.n_findings} findings, {result.n_flagged} flagged ({result.seconds:.1f}s)")

    # -- stage: score ----------------------------------------------------------------
    # -- probe activations at layers outside collect.layers ---------------------------------
    # A finding's readout may read any residual layer (weight_svd reads the layer of its module, the
    # output baselines the last one). Before scoring, the layers all saved findings need are gathered
    # per (model, probe set); each such set is collected once, in one forward pass, into its own store
    # (the store key includes the layers). Those layers' probe activations are kept in a bounded cache.
    MAX_EXTRA_PROBE_ENTRIES = 32

    def plan_probe_layers(self) -> None:
        """Record, per (model, behavior), the readout layers of all saved findings beyond collect.layers."""
        for key, mcfg in self.methods.items():
            for pair in self.suite.pairs:
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed).with_suffix(".json")
                    if not pair.behaviors or not path.exists():
                        continue
                    records = read_json(path)["findings"]
                    for name, attr in ((pair.a, "layer_a"), (pair.b, "layer_b")):
                        collected = set(self.layers_for(self.model(name)))
                        wanted = {int(r["readout"][attr]) for r in records} - collected
                        for b in pair.behaviors:
                            self._probe_extra_layers.setdefault((name, b), set()).update(wanted)

    def _probe_store(self, model: LoadedModel, model_name: str, behavior: str, ts: TextSet, layer: int):
        if layer in self.layers_for(model):
            return self._collect(model, ts), False
        layers = sorted(self._probe_extra_layers.setdefault((model_name, behavior), set()) | {layer})
        c = self.collect_cfg
        return collect(model, ts, layers, batch_size=c["batch_size"], max_length=c["max_length"],
                       shard_tokens=c["shard_tokens"], progress=self.progress), True

    def probe_acts(self, model_name: str, behavior: str, layer: int) -> ProbeActs:
        key = (model_name, behavior, layer)
        if key not in self._probe_cache:
            m = self.model(model_name)
            ts, labels, texts, users = self.probe_set(behavior, m.tokenizer)
            store, extra = self._probe_store(m, model_name, behavior, ts, layer)
            acts = store.load(layer, torch.float32)
            if extra:
                self._probe_extra_keys.append(key)
                while len(self._probe_extra_keys) > self.MAX_EXTRA_PROBE_ENTRIES:
                    self._probe_cache.pop(self._probe_extra_keys.pop(0), None)
            starts = []
            for text, user in zip(texts, users):
                offset = text.rfind(user)
                enc = m.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                                  max_length=self.collect_cfg["max_length"])
                starts.append(next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= offset), 0))
            self._probe_cache[key] = ProbeActs(acts, labels, torch.tensor(starts))
        return self._probe_cache[key]

    def stage_score(self) -> dict:
        results: list[PairResult] = []
        records: list[MatchRecord] = []
        kw_cache: dict[tuple, set[int]] = {}
        self.plan_probe_layers()
        for key, mcfg in self.methods.items():
            for pair in self.suite.pairs:
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed)
                    status_path = path.with_suffix(".status.json")
                    if not status_path.exists():
                        raise FileNotFoundError(f"no findings for method {key} on {pair.id} (seed {seed}) in {self.run_dir}; run the diff stage first")
                    result = PairResult(**{**read_json(status_path), "behaviors": tuple(pair.behaviors)})
                    if result.status != "ok":
                        results.append(result)
                        continue
                    findings, _ = load_findings(path)
                    result.uniqueness = [float(f.uniqueness) for f in findings]
                    result.flagged = [bool(f.flagged) for f in findings]
                    results.append(result)
                    for b in pair.behaviors:
                        for r, f in enumerate(findings):
                            pa = self.probe_acts(pair.a, b, f.readout.layer_a)
                            pb = self.probe_acts(pair.b, b, f.readout.layer_b)
                            side_model = self.model(pair.b if f.side != "a" else pair.a)
                            kk = (side_model.identity, b)
                            if kk not in kw_cache:
                                kw_cache[kk] = keyword_token_ids(side_model.tokenizer, self.suite.specs[b].keywords)
                            auroc, ctrl, act, tok = match_finding(f, pa, pb, kw_cache[kk], self.scoring)
                            records.append(MatchRecord(key, seed, pair.id, pair.kind, b, r, f.id, float(f.uniqueness),
                                                       bool(f.flagged), auroc, ctrl, act, tok))
        metrics = compute_metrics(results, records, self.scoring)
        write_csv(self.run_dir / "matches.csv", [asdict(r) | {"hit": r.hit} for r in records])
        write_csv(self.run_dir / "pair_results.csv", [{k: v for k, v in asdict(r).items() if k not in ("uniqueness", "flagged")} for r in results])
        payload = {
            "suite": self.suite.name, "model": self.base_name, "methods": self.methods,
            "method_seeds": self.suite.method_seeds, "metrics": metrics,
            "plant_cards": {n: asdict(c) for n, c in self.cards.items()} if self.cards else {},
            "pairs": [asdict(p) for p in self.suite.pairs], "scoring": asdict(self.scoring),
        }
        write_json(self.run_dir / "scores.json", payload)
        rows = []
        for method, summary in metrics.items():
            row: dict[str, Any] = {"method": method}
            for name, m in summary.items():
                if not name.startswith("_"):
                    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = m["value"], m["lo"], m["hi"]
            row["status"] = ";".join(f"{k}={v}" for k, v in summary["_status"].items())
            rows.append(row)
        write_csv(self.run_dir / "scores.csv", rows)
        say(f"scores written to {self.run_dir / 'scores.json'} and scores.csv")
        return payload

    # -- stage: report ---------------------------------------------------------------
    def stage_report(self) -> None:
        from .report import write_report

        write_report(self.run_dir)

    def run(self, stages: list[str]) -> None:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        tracker = Tracker(self.cfg.get("wandb", {}), str(self.run_dir), OmegaConf.to_container(self.cfg, resolve=True))
        t0 = time.time()
        try:
            for stage in STAGES:
                if stage in stages:
                    ts = time.time()
                    say(f"--- stage {stage} ---")
                    if stage == "score":
                        self.ensure_cards()
                        payload = self.stage_score()
                        for method, summary in payload["metrics"].items():
                            tracker.log({f"{method}/{k}": v["value"] for k, v in summary.items() if not k.startswith("_")})
                    else:
                        getattr(self, f"stage_{stage}")()
                    tracker.log({f"time/{stage}": time.time() - ts})
        finally:
            tracker.finish()
        write_json(self.run_dir / "timing.json", {"stages": stages, "seconds": time.time() - t0})
        say(f"done in {time.time() - t0:.0f}s; run folder: {self.run_dir}")
