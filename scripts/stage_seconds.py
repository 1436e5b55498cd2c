#!/usr/bin/env python
"""Where a run's time went: per-stage seconds (timing.json) and the diff stage's seconds per method (the
`seconds` of each findings status record), summed over pairs and seeds, largest first.

    python scripts/stage_seconds.py RUN_DIR [RUN_DIR2]   # two folders: side by side, with the ratio
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def read(run_dir: Path) -> tuple[dict[str, float], dict[str, tuple[int, float]]]:
    stages: dict[str, float] = {}
    timing = run_dir / "timing.json"
    if timing.exists():
        for inv in json.loads(timing.read_text()).get("invocations", []):
            for k, v in inv.get("stage_seconds", {}).items():
                stages[k] = stages.get(k, 0.0) + v
    methods: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for path in sorted((run_dir / "findings").glob("*/*.status.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") == "ok":
            methods[rec["method"]][0] += 1
            methods[rec["method"]][1] += float(rec.get("seconds") or 0.0)
    return stages, {k: (n, s) for k, (n, s) in methods.items()}


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:3]]
    if not dirs:
        raise SystemExit(__doc__)
    data = [read(d) for d in dirs]
    print("stage seconds: " + " | ".join(str(d) for d in dirs))
    for stage in ("plant", "collect", "diff", "score", "report"):
        vals = [d[0].get(stage) for d in data]
        row = "  ".join(f"{v:8.0f}" if v is not None else f"{'-':>8s}" for v in vals)
        ratio = f"  x{vals[0] / vals[1]:.2f}" if len(vals) == 2 and all(vals) else ""
        print(f"  {stage:8s} {row}{ratio}")
    print("diff seconds per method (runs):")
    names = sorted(set().union(*(d[1] for d in data)), key=lambda m: -data[0][1].get(m, (0, 0.0))[1])
    for m in names:
        cells = [f"{d[1][m][1]:8.0f} ({d[1][m][0]:3d})" if m in d[1] else f"{'-':>14s}" for d in data]
        ratio = ""
        if len(data) == 2 and m in data[0][1] and m in data[1][1] and data[1][1][m][1] > 0:
            ratio = f"  x{data[0][1][m][1] / data[1][1][m][1]:.2f}"
        print(f"  {m:22s} {'  '.join(cells)}{ratio}")


if __name__ == "__main__":
    main()
