"""The N-way leaderboard (from nway_scores.json, harness/stages/nway.py): the groups and their ground truth, one row per
N-way method, the paired comparison of every method with the all-pairs baseline and the floor, and cost against N."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np

from ...core.io import read_json
from ..score.significance import ALPHA, compare_pair, holm
from .leaderboard import FLOOR_BOUNDS

LEAD_K = 5


def _ci(p: dict) -> str:
    if not p or p.get("trials", 0) == 0:
        return "—"
    return f"{p['value']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}] ({p['successes']}/{p['trials']})"


def nway_lines(run_dir: Path) -> list[str]:
    s = read_json(Path(run_dir) / "nway_scores.json")
    ks = s.get("ks") or [LEAD_K]
    k = str(LEAD_K if LEAD_K in ks else ks[len(ks) // 2])
    methods = s["methods"]
    order = sorted(methods, key=lambda m: (methods[m]["floor"], -_value(methods[m], "any", k, "exact_set_recall")))
    lines = ["## N-way diffing", "",
             "Each group is N models fine-tuned from one base; a behavior's ground truth is the set of members that have it, "
             "one member may be a null organism (nothing planted). A finding matches a behavior on the pair channels "
             "(activation, token, causal) read on the members it reads; **exact-set recall** counts a behavior as found when "
             "a top-k finding matches it *and* is attributed to exactly its members; **per-member recall** credits each "
             "member of the truth some matching top-k finding includes; **attribution accuracy** is the share of matching "
             "top-k findings attributed to exactly the truth; a **null false alarm** is a flagged finding attributed to "
             "a set that contains the null member. Intervals: exact binomial 95%.", "",
             "| group | N | members | ground truth | null member |", "|---|---|---|---|---|"]
    for g in s["groups"]:
        truth = "; ".join(f"{b}: {{{', '.join(map(str, m))}}}" for b, m in g["truth"].items())
        members = ", ".join(f"{i}={m}" for i, m in enumerate(g["members"]))
        lines.append(f"| {g['id']} | {len(g['members'])} | {members} | {truth} | "
                     f"{'—' if g['null_member'] is None else g['null_member']} |")
    strong = "" if s.get("strong") else (" The causal channel was off in this run (`scoring.strong=false`): \"any\" is "
                                         "the activation and token channels, and strong figures are empty.")
    lines += ["", f"Lead table, k = {k}.{strong}", "",
              f"| method | exact-set R@{k} (any) | per-member R@{k} | attribution acc@{k} | exact-set R@{k} (strong) | "
              "null false-alarm rate | null alarms / group | seeds |", "|---|---|---|---|---|---|---|---|"]
    for m in order:
        any_, strong_ = methods[m]["channels"]["any"][k], methods[m]["channels"]["strong"][k]
        per_group = any_["null_false_alarms_per_group"]
        lines.append(f"| {m}{' (floor)' if methods[m]['floor'] else ''} | {_ci(any_['exact_set_recall'])} | "
                     f"{_ci(any_['per_model_recall'])} | {_ci(any_['attribution_accuracy'])} | "
                     f"{_ci(strong_['exact_set_recall']) if s.get('strong') else '—'} | {_ci(any_['null_false_alarm_rate'])} | "
                     f"{'—' if per_group is None or math.isnan(per_group) else f'{per_group:.1f}'} | "
                     f"{len(methods[m]['seeds'])} |")
    lines += ["", *floor_lines(methods, ks), "", *comparison_lines(methods, k), "", *cost_lines(s.get("runs") or [])]
    return lines


def floor_lines(methods: dict, ks: list[int]) -> list[str]:
    """The pair protocol's floor check (FLOOR_BOUNDS) on each N-way floor's per-member recall at k = 1 and the largest k,
    any channel: the loosest of the N-way recalls (no attribution needed), so exact-set recall is within it too."""
    parts, ok = [], True
    for m, v in methods.items():
        if not v["floor"]:
            continue
        cells = []
        for k, bound in ((min(ks), FLOOR_BOUNDS["recall@1"]), (max(ks), FLOOR_BOUNDS["recall@K"])):
            p = v["channels"]["any"][str(k)]["per_model_recall"]
            within = p["trials"] > 0 and p["value"] <= bound
            ok &= within
            cells.append(f"per-member R@{k} {_ci(p)} (bound {bound:.2f}{'' if within else ': ABOVE'})")
        parts.append(f"`{m}` " + ", ".join(cells))
    if not parts:
        return []
    verdict = "every floor is within the bounds" if ok else "**a floor is above its bound: chance reaches the behaviors here**"
    return ["Floor check (mean over seeds, any channel): " + "; ".join(parts) + f"; {verdict}."]


def _value(m: dict, ch: str, k: str, name: str) -> float:
    v = m["channels"][ch][k][name]["value"]
    return -1.0 if v is None or math.isnan(v) else v


def comparison_lines(methods: dict, k: str) -> list[str]:
    """Every pair of methods on the (group, behavior) units both were scored on: difference in exact-set recall@k
    (any channel), paired bootstrap interval, exact McNemar (or sign-flip for seed-averaged floors), Holm-adjusted."""
    names = [m for m in methods if methods[m]["units"]["any"].get(k)]
    rows = []
    for a, b in combinations(names, 2):
        ua, ub = methods[a]["units"]["any"][k], methods[b]["units"]["any"][k]
        shared = sorted(set(ua) & set(ub))
        x, y = np.array([ua[u] for u in shared]), np.array([ub[u] for u in shared])
        if len(x) and x.mean() < y.mean():
            a, b, x, y = b, a, y, x
        rows.append(compare_pair(a, b, x, y))
    adjusted = holm([r.p for r in rows])
    out = [f"Paired comparison (exact-set recall@{k}, any channel, over the (group, behavior) units both methods were "
           f"scored on; Holm-adjusted over {len(rows)} comparisons; * = significant at {ALPHA}):", "",
           "| a | b | units | R a | R b | a − b [95% CI] | test | p | p (Holm) |", "|---|---|---|---|---|---|---|---|---|"]
    for r, q in sorted(zip(rows, adjusted), key=lambda t: (math.isnan(t[0].p), t[0].p)):
        mark = " *" if not math.isnan(q) and q < ALPHA else ""
        out.append(f"| {r.a} | {r.b} | {r.n_units} | {r.recall_a:.2f} | {r.recall_b:.2f} | {r.diff:+.2f} [{r.lo:+.2f}, "
                   f"{r.hi:+.2f}] | {r.test} | {r.p:.3g} | {q:.3g}{mark} |")
    return out


def cost_lines(runs: list[dict]) -> list[str]:
    """Seconds per method run against the group's size N (mean over seeds and groups of that size), from the runs'
    records (nway_results.csv's rows)."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        if r.get("status") == "ok" and r.get("seconds") not in (None, ""):
            by.setdefault(r["method"], {}).setdefault(int(r["n_members"]), []).append(float(r["seconds"]))
    sizes = sorted({n for v in by.values() for n in v})
    if not sizes:
        return []
    out = ["Cost: seconds per method run (one group, one seed) by group size N, mean over the runs of that size.", "",
           "| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m, v in by.items():
        out.append(f"| {m} | " + " | ".join(f"{np.mean(v[n]):.1f}" if n in v else "—" for n in sizes) + " |")
    return out
