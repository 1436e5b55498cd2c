"""Seconds per N-way method run against the group's size N, from a run folder's nway_results.csv (written by the
diff stage), e.g. after `diffbench run suite=nway_scaling stages=[plant,diff]`:

    python scripts/nway_cost.py RUN_DIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from diffbench.harness.report.nway import cost_lines


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = Path(sys.argv[1]) / "nway_results.csv"
    if not path.exists():
        sys.exit(f"{path} not found: run the diff stage of a suite with groups first")
    print("\n".join(cost_lines(list(csv.DictReader(path.open())))))


if __name__ == "__main__":
    main()
