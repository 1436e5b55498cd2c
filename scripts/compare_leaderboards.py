#!/usr/bin/env python
"""Two run folders of the same suite, compared cell by cell: which leaderboard cells differ, by how much, and why
(the units whose hits changed, and on which channel).

    python scripts/compare_leaderboards.py RUN_A RUN_B [--metrics recall@5,null_false_alarm_rate,...] [--tol 1e-9]

Made for the reproducibility check of shipped organisms: the quick suite run twice on the same organisms, e.g. on two
CPU instruction sets (`ATEN_CPU_CAPABILITY=default` against the native kernels, or two machine classes). Prints one
line per differing cell (method, metric, A, B) and, per method, the (pair, behavior, rank) matches that hit in one run
and not in the other with their channels; exits 0 whether or not cells differ (a difference is a finding, not an
error). The comparison of two reference runs goes into the README with the command.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

DEFAULT_METRICS = ("recall@1", "recall@5", "recall@20", "recall_strong@5", "null_false_alarm_rate", "analog_fp@20",
                   "organism_auroc")


def load(run: Path) -> tuple[dict, dict[tuple, dict]]:
    scores = json.loads((run / "scores.json").read_text())
    hits: dict[tuple, dict] = {}
    with open(run / "matches.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r.get("hit") == "True":
                hits[(r["method"], r["seed"], r["pair"], r["behavior"], r["rank"])] = r
    return scores, hits


def channels(r: dict) -> str:
    return "+".join(c for c, key in (("activation", "act_match"), ("token", "token_match"), ("strong", "strong_match"))
                    if r.get(key) == "True") or "?"


def compare(run_a: Path, run_b: Path, metrics: list[str], tol: float) -> list[str]:
    (sa, ha), (sb, hb) = load(run_a), load(run_b)
    lines = []
    methods = sorted(set(sa["metrics"]) | set(sb["metrics"]))
    n_cells = n_diff = 0
    for m in methods:
        ma, mb = sa["metrics"].get(m, {}), sb["metrics"].get(m, {})
        for k in metrics:
            va, vb = (ma.get(k) or {}).get("value", math.nan), (mb.get(k) or {}).get("value", math.nan)
            n_cells += 1
            same = (math.isnan(va) and math.isnan(vb)) or abs(va - vb) <= tol
            if not same:
                n_diff += 1
                lines.append(f"{m:24s} {k:24s} {va:8.3f} {vb:8.3f}  ({vb - va:+.3f})")
    lines.insert(0, f"{n_diff} of {n_cells} cells differ ({len(methods)} methods x {len(metrics)} metrics)")
    for m in methods:
        only_a = sorted(k for k in ha if k[0] == m and k not in hb)
        only_b = sorted(k for k in hb if k[0] == m and k not in ha)
        for side, keys, src in (("A only", only_a, ha), ("B only", only_b, hb)):
            for key in keys[:10]:
                lines.append(f"  {m}: hit in {side}: seed {key[1]} {key[2]} / {key[3]} rank {key[4]} ({channels(src[key])})")
            if len(keys) > 10:
                lines.append(f"  {m}: ... {len(keys) - 10} more hits in {side}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    ap.add_argument("--tol", type=float, default=1e-9)
    a = ap.parse_args()
    for run in (a.run_a, a.run_b):
        if not (run / "scores.json").is_file() or not (run / "matches.csv").is_file():
            sys.exit(f"{run} is not a scored run folder (no scores.json / matches.csv)")
    print("\n".join(compare(a.run_a, a.run_b, a.metrics.split(","), a.tol)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
