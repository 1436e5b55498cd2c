#!/usr/bin/env python
"""Copy a finished run folder's publishable part into results/: the report, the scores, the corpus card, the plant
cards, the HTML pages and the causal channel's deltas (strong/: kilobytes per unit, and `diffbench evaluate` reuses
their null draws), not the methods' findings (findings/: tens of MB, rebuilt by rerunning the diff stage).

    python scripts/publish_run.py RUN_DIR results/NAME [--replace]

The copy is made beside the destination and renamed into place only once every file reads back with its size, so
an interrupted publish never leaves a half-written results folder. The run's own command.txt is copied as it is;
add the narrative (machine state, commits per stage, stage seconds) by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FILES = ["command.txt", "config.yaml", "flag_thresholds.json", "hit_matrix.png", "leaderboard.md", "matches.csv",
         "pair_results.csv", "recall_vs_false_alarms.png", "runs.csv", "scores.csv", "scores.json", "timing.json",
         "nway_scores.json", "nway_matches.csv", "nway_results.csv"]  # nway_*: suites with groups
FOLDERS = ["corpus", "plant_cards", "html", "alignment", "strong"]  # alignment: cross-tokenizer pairs only
REQUIRED = ["leaderboard.md", "timing.json"]  # and scores.json or nway_scores.json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--replace", action="store_true", help="replace an existing destination folder")
    a = ap.parse_args()
    missing = [f for f in REQUIRED if not (a.run_dir / f).is_file()]
    if not any((a.run_dir / f).is_file() for f in ("scores.json", "nway_scores.json")):
        missing.append("scores.json")
    if missing:
        sys.exit(f"{a.run_dir} is not a finished run: no {', '.join(missing)} (run its report stage first)")
    if a.dest.exists() and not a.replace:
        sys.exit(f"{a.dest} exists; pass --replace to overwrite it")
    tmp = a.dest.with_name(a.dest.name + ".publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copied = []
    for f in FILES:
        if (a.run_dir / f).is_file():
            shutil.copy2(a.run_dir / f, tmp / f)
            copied.append(f)
    for d in FOLDERS:
        if (a.run_dir / d).is_dir():
            shutil.copytree(a.run_dir / d, tmp / d)
            copied += [str(p.relative_to(a.run_dir)) for p in (a.run_dir / d).rglob("*") if p.is_file()]
    bad = [f for f in copied if (tmp / f).stat().st_size != (a.run_dir / f).stat().st_size]
    if bad:
        sys.exit(f"copies differ in size from their sources: {bad[:5]} (left in {tmp})")
    old = a.dest.with_name(a.dest.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if a.dest.exists():
        a.dest.rename(old)  # the old folder stays whole until the new one is in place
    tmp.rename(a.dest)
    shutil.rmtree(old, ignore_errors=True)
    size = sum((a.dest / f).stat().st_size for f in copied)
    skipped = sorted(p.name for p in a.run_dir.iterdir() if p.name not in FILES + FOLDERS)
    print(f"{a.dest}: {len(copied)} files, {size / 1e6:.1f} MB; not copied: {', '.join(skipped) or '(nothing)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
