"""Calibrated flags: for each method, the uniqueness above which at most 5% of its findings on null pairs lie.

A method's own flag rule (`Finding.flagged`) is whatever its authors published; on the benchmark some rules
flag nearly every finding of a pair where nothing was planted (the null false-alarm rate). A reader of a
`diffbench diff` report wants the other reading: "would a finding this strong be rare if nothing had been
planted?". The score stage answers it from the run's own null pairs: the threshold is the 95% quantile
(`method="higher"`, so at most 5% of null findings exceed it) of the uniqueness of every finding the method
reported on a null pair, over all seeds. The reference run's thresholds ship in `results/` and the diff tool
marks each finding that clears them.

The threshold is only meaningful for the same method config and a model like the reference's: uniqueness
scales are method-specific and depend on the model's activation norms. The record carries both, and
`calibrated_flag` says why a threshold does not apply instead of applying it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ...core.io import read_json

ADMIT = 0.05  # share of null-pair findings a threshold lets through
FILE = "flag_thresholds.json"


def null_thresholds(results: Iterable, config_hashes: dict[str, str], method_names: dict[str, str]) -> dict[str, dict]:
    """{method key: {"threshold", "n_null_findings", "n_null_runs", "config_hash", "name"}} from the score stage's
    PairResults (each carries the uniqueness of all its findings). Methods without null-pair findings are absent."""
    pooled: dict[str, list[float]] = {}
    runs: dict[str, int] = {}
    for r in results:
        if r.pair_kind != "null" or r.status != "ok":
            continue
        pooled.setdefault(r.method, []).extend(float(u) for u in r.uniqueness)
        runs[r.method] = runs.get(r.method, 0) + 1
    out = {}
    for method, u in sorted(pooled.items()):
        if not u:
            continue
        out[method] = {"name": method_names.get(method, method), "threshold": float(np.quantile(u, 1 - ADMIT, method="higher")),
                       "n_null_findings": len(u), "n_null_runs": runs[method], "config_hash": config_hashes.get(method, "")}
    return out


@dataclass
class Calibration:
    """The thresholds of one reference run, as shipped in results/ (or written by any run's score stage)."""

    path: Path
    model: str
    suite: str
    thresholds: dict[str, dict]

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} not found (a run's {FILE}, written by the score stage)")
        data = read_json(path)
        if not isinstance(data, dict) or "thresholds" not in data:
            raise ValueError(f"{path} is not a flag-threshold file: it has no `thresholds`")
        return cls(path, data.get("model", "?"), data.get("suite", "?"), data["thresholds"])

    def flag(self, method_key: str, config_hash: str, uniqueness: float) -> tuple[bool | None, str]:
        """(clears the null threshold, or None where no threshold applies; the reason or the threshold in words)."""
        rec = self.thresholds.get(method_key)
        if rec is None:
            return None, f"no reference calibration for {method_key} in {self.path}"
        if rec.get("config_hash") and config_hash and rec["config_hash"] != config_hash:
            return None, f"{method_key} runs with another config than in the reference run: its threshold does not apply"
        t = float(rec["threshold"])
        return bool(uniqueness > t), f"threshold {t:.4g} (95% of {rec['n_null_findings']} null-pair findings lie at or below it)"


def payload(thresholds: dict[str, dict], model: str, suite: str, run_dir: Path) -> dict:
    return {"model": model, "suite": suite, "run": Path(run_dir).name, "admit": ADMIT, "thresholds": thresholds,
            "about": "per method: uniqueness above which at most 5% of its findings on this run's null pairs lie"}
