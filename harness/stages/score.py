"""Stage 4, score: match every saved finding against the planted ground truth (harness/score/scoring.py) on held-out
probes, run the causal strong-hit test on each method's top findings (harness/score/strong.py), and compute the
metrics. Writes scores.json, scores.csv, matches.csv and pair_results.csv; returns the scores.json payload."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ...core import METHODS, load_findings
from ...core.io import read_json, safe_name, stable_int, write_csv, write_json
from ..score.calibration import TokenNull
from ..score.flags import FILE as FLAGS_FILE, null_thresholds, payload as flags_payload
from ..score.probes import Probes
from ..report.leaderboard import TRAINING_INFO
from ..score.scoring import PROTOCOL_VERSION, Keywords, MatchRecord, PairResult, compute_metrics, keywords_for, match_finding, match_finding_one_side, probe_null
from ..score.status import findings_intact, read_status
from ..suite import BASE, Pair
from ...core.env import dtype_name, say
from ..workspace import Workspace


def run(ws: Workspace) -> dict:
    scorer = Scorer(ws)
    results: list[PairResult] = []
    records: list[MatchRecord] = []
    sides: dict[tuple[str, str, int], dict[str, int]] = {}  # (method, pair, seed) -> findings reported / flagged per model
    t_strong = 0.0
    # pairs outermost: one pair's probe activations, activation nulls and models serve all its methods
    for pair in ws.suite.pairs:
        pair_results, loaded = load_pair(ws, pair)
        results += pair_results
        for (key, seed), findings in loaded.items():
            sides[(key, pair.id, seed)] = side_counts(findings)
        for b in pair.behaviors:
            if pair.cross:
                for (key, seed), findings in loaded.items():
                    records += scorer.match_cross(key, seed, pair, b, findings)
                continue
            t0 = time.time()
            unit = scorer.match_unit(pair, b, loaded)
            say(f"score {pair.id} / {b}: {len(unit)} findings matched on held-out probes ({time.time() - t0:.0f}s)")
            if ws.scoring.strong.enabled:
                t0 = time.time()
                scorer.strong_channel(pair, b, loaded, unit)
                t_strong += time.time() - t0
            records += unit
    if ws.scoring.strong.enabled:
        say(f"strong (causal) channel: {t_strong:.0f}s")
    return write_scores(ws, results, records, sides, scorer.null_record())


def load_pair(ws: Workspace, pair: Pair) -> tuple[list[PairResult], dict[tuple[str, int], list]]:
    """Each method's and seed's status on a pair, and the findings of those that ran (checked against their checksum
    and against this run's inputs)."""
    results, loaded = [], {}
    now = ws.pair_status(pair)  # an organism replanted since the diff stage may fail its gate now
    for key, mcfg in ws.methods.items():
        for seed in ws.seeds_for(mcfg["name"], pair):
            path = ws.finding_path(key, pair, seed)
            status_path = path.with_suffix(".status.json")
            if not status_path.exists():
                raise FileNotFoundError(f"no findings for method {key} on {pair.id} (seed {seed}) in {ws.run_dir}; run the diff stage first")
            result = PairResult(**{**read_status(status_path), "behaviors": tuple(pair.behaviors)})
            results.append(result)
            if result.status == "ok" and now != "ok":
                result.status, result.error = "excluded", now
            if result.status != "ok":
                continue
            if not findings_intact(path, result.__dict__):
                raise ValueError(f"saved findings {path}.json/.safetensors are missing or do not match their checksum "
                                 f"(edited or truncated); rerun the diff stage to recompute them")
            if result.inputs_hash and result.inputs_hash != ws.pair_inputs(pair):
                raise ValueError(f"saved findings of {key} on {pair.id} (seed {seed}) were computed from other models or "
                                 f"corpus than this run's (plant, corpus or collect settings changed); rerun the diff "
                                 f"stage (stages=[diff,score,report]) to recompute them")
            try:
                findings, _ = load_findings(path)
            except Exception as e:
                raise ValueError(f"saved findings {path}.json/.safetensors cannot be read ({type(e).__name__}: {e}); "
                                 f"delete them and rerun the diff stage") from e
            result.uniqueness = [float(f.uniqueness) for f in findings]
            result.flagged = [bool(f.flagged) for f in findings]
            loaded[(key, seed)] = findings
    return results, loaded


def write_scores(ws: Workspace, results: list[PairResult], records: list[MatchRecord], sides: dict,
                 strong_null: dict | None = None) -> dict:
    cross_ids = {p.id for p in ws.suite.pairs if p.cross}
    floors = ws.floors
    metrics = compute_metrics([r for r in results if r.pair not in cross_ids], [r for r in records if r.pair not in cross_ids], ws.scoring,
                              floors=floors, pooled=ws.pooled_floors)
    metrics_cross = compute_metrics([r for r in results if r.pair in cross_ids], [r for r in records if r.pair in cross_ids],
                                    ws.scoring, cross=True, floors=floors)
    write_csv(ws.run_dir / "matches.csv", [asdict(r) | {"hit": r.hit} for r in records])
    write_csv(ws.run_dir / "pair_results.csv", [{k: v for k, v in asdict(r).items() if k not in ("uniqueness", "flagged")} for r in results])
    payload = {
        "suite": ws.suite.name, "model": ws.base_name,
        "methods": {k: {**m, "config": ws.method_configs[k]} for k, m in ws.methods.items()},
        "method_seeds": ws.suite.method_seeds, "metrics": metrics,
        "plant_cards": {n: asdict(c) for n, c in ws.cards.items()} if ws.cards else {},
        "pairs": [asdict(p) for p in ws.suite.pairs], "scoring": asdict(ws.scoring),
        # what the leaderboard's breakdowns group units and null pairs by (harness/score/significance.py)
        "organisms": {n: {"kind": o.kind, "recipe": o.recipe or "lora", "behaviors": list(o.behaviors)} for n, o in ws.suite.organisms.items()},
        "behaviors": {b: {"family": s.family or "hand-written", "side": s.side} for b, s in ws.suite.specs.items()},
        "floors": sorted(floors),
        # what `diffbench evaluate` checks before adding a method to this run as a reference (harness/evaluate.py)
        "protocol": {"version": PROTOCOL_VERSION, "pair_inputs": {p.id: ws.pair_inputs(p) for p in ws.suite.pairs},
                     # what dtype=auto became here: `diffbench evaluate` runs in the reference's dtype, whatever its
                     # machine would pick
                     "dtype": dtype_name(ws.model(BASE).dtype)},
        "seeds": {k: ws.seeds_for(m["name"]) for k, m in ws.methods.items()},
    }
    if strong_null:
        payload["strong_null_reused"] = strong_null
    if cross_ids:
        payload["metrics_crossarch"] = metrics_cross
        payload["models"] = {n: ws.base_model_name(n) for p in ws.suite.pairs if p.cross for n in (p.a, p.b)}
        payload["alignment"] = alignment_stats(ws)
    write_json(ws.run_dir / "scores.json", payload)
    names = {k: m["name"] for k, m in ws.methods.items()}
    write_json(ws.run_dir / FLAGS_FILE, flags_payload(null_thresholds(results, ws.config_hashes, names), ws.base_name, ws.suite.name, ws.run_dir))
    write_csv(ws.run_dir / "runs.csv", run_details(ws, results, sides))
    rows = []
    for method, summary in [*metrics.items(), *((f"{m} [crossarch]", v) for m, v in metrics_cross.items())]:
        row: dict[str, Any] = {"method": method}
        for name, m in summary.items():
            if not name.startswith("_"):
                row[name], row[f"{name}_lo"], row[f"{name}_hi"] = m["value"], m["lo"], m["hi"]
        row["status"] = ";".join(f"{k}={v}" for k, v in summary["_status"].items())
        rows.append(row)
    write_csv(ws.run_dir / "scores.csv", rows)
    say(f"scores written to {ws.run_dir / 'scores.json'} and scores.csv")
    return payload


def strong_candidates(key: str, seed: int, findings: list, k: int) -> dict:
    """{(key, seed, rank): (layer, direction)} of the top-k findings that have a non-zero direction."""
    return {(key, seed, r): (int(f.direction_layer), f.direction) for r, f in enumerate(findings[:k])
            if f.direction is not None and f.direction_layer is not None and float(f.direction.norm()) > 0}


def side_counts(findings: list) -> dict[str, float]:
    """How many findings a run reported and flagged on each model ("both" counts as B, the changed model), and its top
    finding's uniqueness (the pair-level score of detection at a fixed false-alarm rate; empty without findings)."""
    out: dict = {"reported_a": 0, "reported_b": 0, "flagged_a": 0, "flagged_b": 0}
    for f in findings:
        side = "a" if f.side == "a" else "b"
        out["reported_" + side] += 1
        out["flagged_" + side] += int(bool(f.flagged))
    out["top_uniqueness"] = max((float(f.uniqueness) for f in findings), default="")
    return out


def run_details(ws: Workspace, results: list[PairResult], sides: dict) -> list[dict]:
    """Per method run that produced findings: its training diagnostics (the `*.metrics.json` a method saved
    beside its findings: held-out EV per model, L0, dead fraction) and how many findings it reported and
    flagged on each model (`sides`, counted when the score stage loaded them). The report reads these, not the
    findings."""
    rows = []
    for r in results:
        if (r.method, r.pair, r.seed) not in sides:  # not run, failed, excluded or not applicable: no findings
            continue
        # save_run_metrics writes <work_dir>/<registered name>-<pair>-seed<s>.metrics.json (core/method.py: work_stem)
        stem = f"{ws.methods[r.method]['name']}-{safe_name(r.pair, 200)}-seed{r.seed}"
        metrics = ws.run_dir / "findings" / r.method / f"{stem}.metrics.json"
        info = read_json(metrics) if metrics.exists() else {}
        rows.append({"method": r.method, "pair": r.pair, "pair_kind": r.pair_kind, "seed": r.seed, **sides[(r.method, r.pair, r.seed)],
                     **{k: info.get(k) for k, _ in TRAINING_INFO}})
    return rows


def alignment_stats(ws: Workspace) -> dict[str, dict]:
    """Aligned share of each cross-tokenizer pair's audit corpus (from the collect stage)."""
    out = {}
    for pair in ws.suite.pairs:
        path = ws.run_dir / "alignment" / f"{pair.id}.json"
        if pair.cross and path.exists():
            out[pair.id] = read_json(path)
        elif pair.cross and ws.pair_status(pair) == "ok":
            p = ws.paired_corpus(pair)
            if p.alignment is not None:
                out[pair.id] = p.alignment.stats
    return out


def null_reference(ws: Workspace) -> Path | None:
    """The committed reference whose causal-channel null draws this run reuses (`strong.null_from`), or None. Refused
    (auto: skipped, saying why) when it was made under another protocol version, in another dtype or with other
    generation settings; models and prompts are checked per unit by the cache's settings key (strong.seed_null)."""
    from omegaconf import OmegaConf

    from ..references import REFERENCES, reference_dir

    cfg = ws.scoring.strong
    name = cfg.null_from
    if not cfg.enabled or name is None:
        return None
    auto = name == "auto"
    if auto:
        if ws.suite.name not in REFERENCES:
            return None
        name = ws.suite.name
    try:
        ref = reference_dir(name)
    except FileNotFoundError:
        if auto:
            return None
        raise
    if ref.resolve() == ws.run_dir.resolve():
        return None
    scores = read_json(ref / "scores.json")
    protocol = scores.get("protocol") or {}
    ref_strong = OmegaConf.to_container(OmegaConf.load(ref / "config.yaml")).get("scoring", {}).get("strong") or {}
    differ = [k for k in ("n_prompts", "max_new_tokens", "batch_size") if ref_strong.get(k) != getattr(cfg, k)]
    problems = ([f"protocol version {protocol.get('version')} (this code: {PROTOCOL_VERSION})"]
                if protocol.get("version") != PROTOCOL_VERSION else [])
    problems += ([f"dtype {protocol.get('dtype')} (this run: {dtype_name(ws.model(BASE).dtype)})"]
                 if protocol.get("dtype") != dtype_name(ws.model(BASE).dtype) else [])
    problems += [f"strong.{k} {ref_strong.get(k)} (this run: {getattr(cfg, k)})" for k in differ]
    problems += [] if (ref / "strong").is_dir() else ["no strong/ folder"]
    if problems:
        msg = f"the causal channel's null draws of {ref.name} are not this run's: {'; '.join(problems)}"
        if not auto:
            raise ValueError(msg + "; set scoring.strong.null_from=null to draw them here")
        say(msg + "; drawing them here")
        return None
    say(f"strong (causal) channel: reusing the null draws of {ref.name} where models and prompts match "
        "(scoring.strong.null_from=null draws them here)")
    return ref


class Scorer:
    """Matching of findings with the probes, keywords and activation nulls of the pair being scored."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.null_reference = null_reference(ws)
        self.null_reused: dict[str, dict] = {}  # unit file -> its cache's "null_from" (layer key -> [reference, draws])
        self.probes = Probes(ws)
        self.probes.plan()
        self._keywords: dict[tuple, Keywords] = {}
        self._cross_nulls: dict[tuple, object] = {}  # activation nulls of the cross pair being scored
        self._token_null = TokenNull(ws.scoring.token_null_draws, ws.scoring.top_tokens, seed=0)

    def null_record(self) -> dict | None:
        """What scores.json says of the reused null draws (the leaderboard's header quotes it)."""
        if not self.null_reused:
            return None
        layers = [entry for unit in self.null_reused.values() for entry in unit.values()]
        return {"reference": ", ".join(sorted({name for name, _ in layers})), "units": len(self.null_reused),
                "draws": int(sum(n for _, n in layers))}

    def keywords(self, model, behavior: str) -> Keywords:
        """The behavior's keyword ids in the model's vocabulary with the token channel's p-value there (cached)."""
        key = (model.identity, behavior)
        if key not in self._keywords:
            self._keywords[key] = keywords_for(model, self.ws.suite.specs[behavior].keywords, self._token_null)
        return self._keywords[key]

    def match_unit(self, pair: Pair, behavior: str, loaded: dict) -> list[MatchRecord]:
        """Activation and token matches of every loaded finding of a same-architecture pair on one behavior, each
        activation match calibrated against random readouts of its own family on the same probes."""
        ws, acts = self.ws, self.probes.acts
        first = acts(pair.a, behavior, ws.layers_for(ws.model(pair.a))[0])
        null = probe_null(first, lambda side, layer: acts(pair.a if side == "a" else pair.b, behavior, layer),
                          ws.scoring, seed=stable_int(pair.id, behavior))
        out = []
        for (key, seed), findings in loaded.items():
            for r, f in enumerate(findings):
                pa = acts(pair.a, behavior, f.readout.layer_a)
                pb = acts(pair.b, behavior, f.readout.layer_b)
                kw = self.keywords(ws.model(pair.b if f.side != "a" else pair.a), behavior)
                act, tok = match_finding(f, pa, pb, kw, ws.scoring, null)
                out.append(MatchRecord(key, seed, pair.id, pair.kind, behavior, r, f.id, float(f.uniqueness), bool(f.flagged),
                                       act.auroc, act.control, act.match, tok, null_q=act.null_q, act_p=act.p,
                                       token_p=kw.p_for(f.token_ids, ws.scoring)))
        return out

    def strong_channel(self, pair: Pair, behavior: str, loaded: dict, records: list[MatchRecord]) -> None:
        """The causal test (strong.py) of each method's top-k findings with a direction, on the first
        `strong.max_seeds` seeds (a floor's on `strong.floor_max_seeds`, by default all); fills the strong fields of
        `records` in place."""
        ws, cfg = self.ws, self.ws.scoring.strong
        candidates = {}
        for (key, seed), findings in loaded.items():
            name = ws.methods[key]["name"]
            if seed in cfg.seeds_tested(ws.seeds_for(name, pair), METHODS.get(name).floor):
                candidates |= strong_candidates(key, seed, findings, cfg.k)
        self.strong_test(pair, behavior, candidates, records)

    def strong_test(self, pair: Pair, behavior: str, candidates: dict, records: list[MatchRecord]) -> None:
        """The causal test of `candidates` {(method key, seed, rank): (layer, direction)} on one unit: steered in
        pair.a, ablated in pair.b; fills the strong fields of the `records` with the same (method, seed, rank)."""
        from ..score.strong import StrongCache, seed_null, settings_of, strong_hits

        ws, cfg = self.ws, self.ws.scoring.strong
        if not candidates:
            return
        say(f"strong {pair.id} / {behavior}: testing {len(candidates)} directions (steer and ablate)")
        ma, mb = ws.model(pair.a), ws.model(pair.b)
        T, C = ws.suite.specs[behavior].probes(ws.suite.n_probes)
        prompts = [p.text for p in T[: cfg.n_prompts]]
        controls = [p.text for p in C[: cfg.n_prompts]]  # for the ablation's specificity (strong.max_collateral)

        def scale_at(layer: int) -> float:  # mean per-token |h_B - h_A| on the T probes at that layer
            pa, pb = self.probes.acts(pair.a, behavior, layer), self.probes.acts(pair.b, behavior, layer)
            keep = (pa.acts.pos >= pa.start[pa.acts.text_idx]) & torch.from_numpy(pa.labels == 1)[pa.acts.text_idx]
            return float((pb.acts.acts[keep].float() - pa.acts.acts[keep].float()).norm(dim=1).mean())

        unit_file = f"{pair.id}__{behavior}.json"
        cache = StrongCache(ws.run_dir / "strong" / unit_file, settings_of(cfg, prompts, ma.identity, mb.identity))
        if self.null_reference is not None:
            seed_null(cache, self.null_reference / "strong" / unit_file, self.null_reference.name)
        if cache.data.get("null_from"):
            self.null_reused[unit_file] = cache.data["null_from"]
        res = strong_hits(ma, mb, prompts, ws.suite.specs[behavior].detector_b, candidates, scale_at, cfg, cache,
                          seed=stable_int(pair.id, behavior), progress=ws.progress, controls=controls)
        n_hits = 0
        for rec in records:
            got = res.get((rec.method, rec.seed, rec.rank))
            if got is None:
                continue
            rec.strong_tested, rec.strong_steer, rec.strong_ablate, rec.strong_p, rec.strong_match, rec.strong_collateral = (
                True, got.steer, got.ablate, got.p, got.match, float("nan") if got.collateral is None else got.collateral)
            n_hits += got.match
        say(f"strong {pair.id} / {behavior}: {len(candidates)} directions tested, {n_hits} strong hits")

    def match_cross(self, method_key: str, seed: int, pair: Pair, behavior: str, findings: list) -> list[MatchRecord]:
        """Match records for a cross-architecture pair: each finding is read on its own model's probe
        activations (that model's chat template and tokens), and its control is the same readout on that
        model's unmodified base: a feature the base already has is not the plant. The activation null draws
        random readouts of the same one-sided family on the same probe activations."""
        ws, acts = self.ws, self.probes.acts
        out = []
        nodes = {"a": pair.a, "b": pair.b}
        for r, f in enumerate(findings):
            best = None
            for side in ([f.side] if f.side in ("a", "b") else ["a", "b"]):
                node = nodes[side]
                layer = f.readout.layer_a if side == "a" else f.readout.layer_b
                probe = acts(node, behavior, layer)
                control = acts(ws.base_of(node), behavior, layer)
                kw = self.keywords(ws.model(node), behavior)
                nk = (pair.id, behavior, side)
                if nk not in self._cross_nulls:
                    self._cross_nulls = {k: v for k, v in self._cross_nulls.items() if k[:2] == nk[:2]}  # one unit at a time
                    self._cross_nulls[nk] = probe_null(probe, lambda _s, lay, _n=node: acts(_n, behavior, lay),
                                                       ws.scoring, seed=stable_int(pair.id, behavior, side))
                act, tok = match_finding_one_side(f, side, probe, control, kw, ws.scoring, self._cross_nulls[nk])
                res = (side, act, tok, kw.p_for(f.token_ids, ws.scoring))
                if best is None or (act.match or tok, act.auroc) > (best[1].match or best[2], best[1].auroc):
                    best = res
            side, act, tok, token_p = best
            out.append(MatchRecord(method_key, seed, pair.id, pair.kind, behavior, r, f.id, float(f.uniqueness), bool(f.flagged),
                                   act.auroc, act.control, act.match, tok, cross=True, side=side, planted_side=pair.side,
                                   null_q=act.null_q, act_p=act.p, token_p=token_p))
        return out
