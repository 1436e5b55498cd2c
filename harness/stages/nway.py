"""N-way groups (the suite's `groups:` section): the diff and score stages for N models of one base.

    diff(ws)    every N-way method (conf/nway_method/) on every group and seed: nway/findings/<key>/<group>@s<seed>
                nway_results.csv: every run's status and seconds (cost against N)
    score(ws)   each finding matched to each behavior of the group with the pair channels, then attribution scores
                (harness/score/nway.py): nway_scores.json, nway_matches.csv

Matching. A group finding reads two members, `reads` = (i, j) (core/nway.py). It is matched to a behavior exactly as a
pair finding of (A = member i, B = member j) is, on the behavior's held-out probes: activation channel (calibrated
against random readouts of its own family on the same probes), token channel, and, where enabled, the causal channel
(steered in the base model, ablated in member j). `reads` = (m, m) is a read against the shared base: A is the base.
A finding matches a behavior if any channel hits ("any"), or the causal channel does ("strong"). Which members it is
attributed to is then checked against the behaviors' ground truth (exact set, per member, accuracy, null member).

Floors are N-way methods too (`all_pairs` of random directions: `floor` from its pair method), run on the suite's
floor seeds; every method's figures pool its groups and seeds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from ...core import load_findings, save_findings
from ...core.env import say
from ...core.io import stable_hash, stable_int, write_csv, write_json
from ...core.nway import GroupActivations, GroupContext
from ..pair_run import run_group_method
from ..score.nway import aggregate, score_group
from ..score.scoring import MatchRecord, PairResult, match_finding, probe_null
from ..score.status import findings_digest, findings_intact, read_status, saved_run_current
from ..suite import BASE, Group, Pair
from ..workspace import Workspace

log = logging.getLogger(__name__)
CHANNELS = ("any", "strong")  # a finding matches a behavior on any channel, or on the causal channel


def seeds_of(ws: Workspace, key: str) -> list[int]:
    method = ws.nway_built[key]
    if not method.stochastic:
        return [0]
    return list(range(ws.suite.floor_seeds)) if method.floor else list(ws.suite.method_seeds)


def finding_path(ws: Workspace, key: str, group: Group, seed: int) -> Path:
    return ws.run_dir / "nway" / "findings" / key / f"{group.id}@s{seed}"


def group_inputs(ws: Workspace, group: Group) -> str:
    """Key of what a group's findings depend on: every member's model, the corpus, the stored layers and dtype."""
    models = [ws.model(m) for m in group.members]
    return stable_hash({"members": [m.identity for m in models], "base": ws.model(BASE).identity,
                        "texts": ws.corpus(BASE).key, "layers": ws.layers_for(models[0]), "dtype": str(models[0].dtype),
                        "collect": {"max_length": ws.collect_cfg.max_length, "batch_size": ws.collect_cfg.batch_size}})


# ----------------------------------------------------------------------------- diff


def diff(ws: Workspace) -> None:
    for group in ws.suite.groups:
        excluded = [m for m in group.members if m != BASE and not ws.cards[m].passed]
        inputs = group_inputs(ws, group)
        ctx = None  # built on the first method that needs running: a resumed group loads nothing
        for key, mcfg in ws.nway_methods.items():
            for seed in seeds_of(ws, key):
                path = finding_path(ws, key, group, seed)
                if saved_run_current(path, ws.nway_built[key].config_hash, inputs, f"nway {key} on {group.id} seed {seed}"):
                    continue
                result = PairResult(key, seed, group.id, f"group{group.n}", tuple(b for b, _ in group.truth), "ok",
                                    config_hash=ws.nway_built[key].config_hash, inputs_hash=inputs)
                if excluded:
                    result.status, result.error = "excluded", f"excluded: member(s) {excluded} failed their plant gate"
                    write_json(path.with_suffix(".status.json"), asdict(result))
                    continue
                ctx = ctx or group_context(ws, group)
                ctx.seed, ctx.work_dir = seed, path.parent
                outcome = run_group_method(ws.nway_built[key], ctx, ws.corpus(BASE), ws.collect_cfg.max_length)
                result.status, result.error, result.seconds = outcome.status, outcome.error, outcome.seconds
                if outcome.status == "ok":
                    save_findings(path, outcome.findings, {"method": key, "group": group.id, "seed": seed,
                                                           "members": list(group.members)})
                    result.findings_sha = findings_digest(path)
                    result.n_findings, result.n_flagged = len(outcome.findings), sum(f.flagged for f in outcome.findings)
                    say(f"nway {key:22s} {group.id:16s} seed {seed}: {result.n_findings} findings, {result.n_flagged} "
                        f"flagged ({result.seconds:.1f}s)")
                elif outcome.status == "failed":
                    log.error("N-way method %s failed on %s: %s", key, group.id, outcome.traceback)
                    say(f"N-way method {key} FAILED on {group.id}: {result.error}")
                write_json(path.with_suffix(".status.json"), asdict(result))
    write_csv(ws.run_dir / "nway_results.csv", run_rows(ws))


def run_rows(ws: Workspace) -> list[dict]:
    """Every (method, group, seed) run's status record with the group's size: nway_results.csv (cost against N)."""
    rows = []
    for group in ws.suite.groups:
        for key in ws.nway_methods:
            for seed in seeds_of(ws, key):
                status = read_status(finding_path(ws, key, group, seed).with_suffix(".status.json"), missing_ok=True)
                rows.append({"method": key, "seed": seed, "pair": group.id, "n_members": group.n,
                             **{k: status.get(k) for k in ("status", "error", "seconds", "n_findings", "n_flagged")}})
    return rows


def group_context(ws: Workspace, group: Group) -> GroupContext:
    """The members' (and the base's) activation stores on the audit corpus, from the collection cache."""
    texts = ws.corpus(BASE)
    models = [ws.model(m) for m in group.members]
    t0 = time.time()
    stores = [ws.collect(m, texts) for m in models]
    base = ws.model(BASE)
    say(f"group {group.id}: {group.n} members' activations on {len(texts)} texts ({time.time() - t0:.0f}s)")
    return GroupContext(group.id, models, GroupActivations(stores, len(texts)), ws.layers_for(models[0]), device=ws.device,
                        progress=ws.progress, base=base, base_store=ws.collect(base, texts))


# ----------------------------------------------------------------------------- score


def score(ws: Workspace, scorer) -> dict:
    """`scorer`: the score stage's `Scorer` (probes, keywords, causal test), shared with the pairs of the run."""
    records: list[MatchRecord] = []
    scores: dict[tuple[str, int, str], dict] = {}  # (method, seed, group) -> {channel: {k: GroupScore}}
    k_max = ws.scoring.K
    for group in ws.suite.groups:
        loaded = {}
        for key in ws.nway_methods:
            for seed in seeds_of(ws, key):
                path = finding_path(ws, key, group, seed)
                status = read_status(path.with_suffix(".status.json"))
                if status.get("status") != "ok":
                    continue
                if not findings_intact(path, status):
                    raise ValueError(f"saved N-way findings {path}.json/.safetensors are missing or do not match their "
                                     "checksum; rerun the diff stage to recompute them")
                loaded[(key, seed)] = load_findings(path)[0]
        for behavior, _ in group.truth:
            t0 = time.time()
            unit = match_group(ws, scorer, group, behavior, loaded, k_max)
            say(f"score {group.id} / {behavior}: {len(unit)} findings matched on held-out probes ({time.time() - t0:.0f}s)")
            if ws.scoring.strong.enabled:
                strong_group(ws, scorer, group, behavior, loaded, unit)
            records += unit
        truth = {b: members for b, members in group.truth}
        for (key, seed), findings in loaded.items():
            mine = [r for r in records if r.pair == group.id and r.method == key and r.seed == seed]
            scores[(key, seed, group.id)] = {
                ch: {k: score_group(findings, truth, {b: {r.finding for r in mine if r.behavior == b and
                                                          (r.hit if ch == "any" else r.strong_match)} for b in truth},
                                    k, group.null_member) for k in ws.scoring.ks}
                for ch in CHANNELS}
    return write_scores(ws, records, run_rows(ws), scores)


def match_group(ws: Workspace, scorer, group: Group, behavior: str, loaded: dict, k_max: int) -> list[MatchRecord]:
    """Activation and token matches of every method's top k_max findings on one (group, behavior)."""
    acts = scorer.probes.acts
    nulls: dict[tuple[str, str], object] = {}
    out = []
    for (key, seed), findings in loaded.items():
        for r, f in enumerate(findings[:k_max]):
            i, j = f.reads
            node_a, node_b = (BASE if i == j else group.members[i]), group.members[j]
            if (node_a, node_b) not in nulls:
                sides = {"a": node_a, "b": node_b}
                first = acts(node_a, behavior, ws.layers_for(ws.model(node_a))[0])
                nulls[(node_a, node_b)] = probe_null(first, lambda side, layer, _s=sides: acts(_s[side], behavior, layer),
                                                     ws.scoring, seed=stable_int(group.id, behavior, node_a, node_b))
            pa, pb = acts(node_a, behavior, f.readout.layer_a), acts(node_b, behavior, f.readout.layer_b)
            kw = scorer.keywords(ws.model(node_b), behavior)
            act, tok = match_finding(f, pa, pb, kw, ws.scoring, nulls[(node_a, node_b)])
            out.append(MatchRecord(key, seed, group.id, f"group{group.n}", behavior, r, f.id, float(f.uniqueness),
                                   bool(f.flagged), act.auroc, act.control, act.match, tok, null_q=act.null_q, act_p=act.p,
                                   token_p=kw.p_for(f.token_ids, ws.scoring)))
    return out


def strong_group(ws: Workspace, scorer, group: Group, behavior: str, loaded: dict, records: list[MatchRecord]) -> None:
    """The causal test of each method's top-k findings on one (group, behavior): steered in the base, ablated in the
    member the finding reads as B (reads[1]), so one test per member that some top-k finding reads."""
    from .score import strong_candidates

    cfg = ws.scoring.strong
    by_member: dict[int, dict] = {}
    for (key, seed), findings in loaded.items():
        method = ws.nway_built[key]
        if seed not in cfg.seeds_tested(seeds_of(ws, key), method.floor):
            continue
        for cand_key, cand in strong_candidates(key, seed, findings, cfg.k).items():
            by_member.setdefault(findings[cand_key[2]].reads[1], {})[cand_key] = cand
    for j, candidates in sorted(by_member.items()):
        unit = Pair(f"{group.id}~{group.members[j]}", "planted", BASE, group.members[j], (behavior,))
        ids = {(k, s, r) for k, s, r in candidates}
        scorer.strong_test(unit, behavior, candidates, [r for r in records if (r.method, r.seed, r.rank) in ids])


def write_scores(ws: Workspace, records: list[MatchRecord], results: list[dict], scores: dict) -> dict:
    """nway_scores.json: per method, channel and k the pooled figures (`aggregate`) with intervals, and per group;
    nway_matches.csv: every match record; nway_results.csv again (the diff stage writes it too)."""
    methods: dict[str, dict] = {}
    for key in ws.nway_methods:
        grouped = _by_group(scores, key)  # group -> its (seed) runs, in suite order

        def pooled(runs: list[dict], ch: str) -> dict:
            return {str(k): {name: _plain(v) for name, v in aggregate([r[ch][k] for r in runs], "exact").items()}
                    for k in ws.scoring.ks}

        per_channel = {ch: pooled([r for runs in grouped.values() for r in runs], ch) for ch in CHANNELS}
        by_group = {g: pooled(runs, "any") for g, runs in grouped.items()}
        # per (group, behavior) unit: the share of seeds whose top k has an exact-set hit (paired significance)
        units = {ch: {str(k): {f"{g}/{b.behavior}": sum(v[ch][k].behaviors[i].exact_hit for v in runs) / len(runs)
                                for g, runs in grouped.items()
                                for i, b in enumerate(runs[0][ch][k].behaviors)} for k in ws.scoring.ks} for ch in CHANNELS}
        methods[key] = {"name": ws.nway_methods[key]["name"], "floor": ws.nway_built[key].floor,
                        "config": ws.nway_built[key].config, "seeds": seeds_of(ws, key), "channels": per_channel,
                        "groups": by_group, "units": units}
    payload = {
        "suite": ws.suite.name, "model": ws.base_name,
        "groups": [{"id": g.id, "members": list(g.members), "truth": {b: list(m) for b, m in g.truth},
                    "null_member": g.null_member} for g in ws.suite.groups],
        "methods": methods, "ks": list(ws.scoring.ks), "strong": bool(ws.scoring.strong.enabled),
        "runs": results,
    }
    write_json(ws.run_dir / "nway_scores.json", payload)
    write_csv(ws.run_dir / "nway_matches.csv", [asdict(r) | {"hit": r.hit} for r in records])
    write_csv(ws.run_dir / "nway_results.csv", results)
    say(f"N-way scores written to {ws.run_dir / 'nway_scores.json'}")
    return payload


def _by_group(scores: dict, key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for (k, _s, g), v in scores.items():
        if k == key:
            out.setdefault(g, []).append(v)
    return out


def _plain(v) -> dict | float:
    return asdict(v) if hasattr(v, "__dataclass_fields__") else float(v)
