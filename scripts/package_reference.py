"""Ship a reference run's figures with the package, for `diffbench diff` outside a source checkout.

    python scripts/package_reference.py [results/quick-audit-smollm2-135m]

Writes harness/difftool/reference/default_methods.json (the methods whose recall@5 beats every floor's upper bound:
what `diffbench diff` runs when no method= is given) and flag_thresholds.json (each method's null-pair threshold).
Run it whenever that reference is regenerated; tests/test_difftool.py fails while the two disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffbench.core.io import atomic_write, read_json, write_json
from diffbench.harness.difftool.tool import PACKAGED_DIR, default_methods
from diffbench.harness.score.flags import FILE as FLAGS_FILE


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "results/quick-audit-smollm2-135m")
    scores = read_json(run / "scores.json")
    write_json(PACKAGED_DIR / "default_methods.json", {"reference": run.name, "suite": scores.get("suite"), "model": scores.get("model"),
                                                       "rule": "recall@5 (any channel) above every floor's upper bound",
                                                       "methods": default_methods(run / "scores.json")})
    atomic_write(PACKAGED_DIR / FLAGS_FILE, (run / FLAGS_FILE).read_text())
    print(f"packaged {run.name}: {PACKAGED_DIR}")


if __name__ == "__main__":
    main()
