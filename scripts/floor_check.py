#!/usr/bin/env python
"""Do a run's floors score at chance? The valid-hits acceptance bounds on every floor's mean over seeds (any
channel): recall@1 <= 0.05 and recall@20 <= 0.10. Then the headline columns of every method, as Markdown rows.

    python scripts/floor_check.py RUN_DIR_OR_RESULTS_DIR   # exit status 1 when a floor is above a bound
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BOUNDS = {"recall@1": 0.05, "recall@20": 0.10}
HEADLINE = ["recall@5", "recall_strong@5", "null_false_alarm_rate"]


def cell(m: dict, key: str) -> str:
    e = m.get(key)
    if not e or e.get("value") is None:
        return "n/a"
    return f"{e['value']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"


def main(folder: Path) -> int:
    scores = json.loads((folder / "scores.json").read_text())
    if "floors" not in scores:
        print(f"{folder}/scores.json names no floors: it was written before the valid-hits protocol; rescore it")
        return 2
    metrics, floors = scores["metrics"], scores["floors"]
    ok = True
    print(f"floors of {folder} (mean over seeds, any channel):")
    for f in floors:
        for key, bound in BOUNDS.items():
            e = metrics[f][key]
            passed = e["value"] <= bound
            ok &= passed
            print(f"  {f:20s} {key:10s} {e['value']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}] over {len(e['per_seed'])} seeds"
                  f"  bound {bound:.2f}  {'ok' if passed else 'ABOVE'}")
    missing = [k for k in HEADLINE if not any(k in m for m in metrics.values())]
    if missing:
        print(f"(no {', '.join(missing)} in scores.json)")
    print("\n| method | " + " | ".join(HEADLINE) + " |\n|---|" + "---|" * len(HEADLINE))
    order = sorted(metrics, key=lambda n: (n in floors, -(metrics[n].get("recall@5") or {}).get("value", 0.0), n))
    for name in order:
        label = f"{name} (floor)" if name in floors else name
        print(f"| {label} | " + " | ".join(cell(metrics[name], k) for k in HEADLINE) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
