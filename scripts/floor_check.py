#!/usr/bin/env python
"""Do a run's floors score at chance? The leaderboard's floor check (harness/report/leaderboard.py: every floor's mean over seeds,
any channel, recall@1 <= 0.05 and recall@K <= 0.10), then the headline columns of every method as Markdown rows.

    python scripts/floor_check.py RUN_DIR_OR_RESULTS_DIR   # exit status 1 when a floor is above a bound
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffbench.harness.report.leaderboard import floor_check, fmt
from diffbench.harness.score.config import ScoringConfig

HEADLINE = ["recall@5", "recall_strong@5", "null_false_alarm_rate"]


def main(folder: Path) -> int:
    scores = json.loads((folder / "scores.json").read_text())
    if "floors" not in scores:
        print(f"{folder}/scores.json names no floors: it was written before the valid-hits protocol; rescore it")
        return 2
    metrics, floors = scores["metrics"], scores["floors"]
    lines, ok = floor_check(metrics, floors, ScoringConfig.from_dict(scores.get("scoring") or {}).K)
    print(*lines)
    print("\n| method | " + " | ".join(HEADLINE) + " |\n|---|" + "---|" * len(HEADLINE))
    order = sorted(metrics, key=lambda n: (n in floors, -(metrics[n].get("recall@5") or {}).get("value", 0.0), n))
    for name in order:
        label = f"{name} (floor)" if name in floors else name
        print(f"| {label} | " + " | ".join(fmt(metrics[name].get(k)) for k in HEADLINE) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
