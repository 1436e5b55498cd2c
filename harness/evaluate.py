"""`diffbench evaluate`: score one new method against a published reference run, without rerunning the others.

    diffbench evaluate quick plugins=[my_method.py] +method.mine.name=my_method   # a method of your own
    diffbench evaluate results/quick-audit-smollm2-135m method=[weight_svd]          # any reference folder

The new run uses the reference's own settings (suite, model, organisms, corpus, collection, scoring; its
config.yaml), runs only the methods the reference does not have (plant: the shipped organisms; collect: from the
cache or recomputed; diff and score: the new methods), then writes the reference's leaderboard with the new rows
added: the reference's metrics, matches, runs and HTML pages are reused as published, and the new methods are
compared with every reference method by the paired significance table (harness/score/significance.py). A method's
scores do not depend on which other methods run (every null is seeded by pair and behavior), so the new row is the
row a full run with that method added would give (tests/test_evaluate.py).

It refuses, with one error naming what differs, a reference whose scoring protocol version or pair inputs (models,
organisms, corpus texts, layers, dtype) are not this run's: numbers from different protocols are never mixed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core.io import atomic_write, read_csv, read_json, write_csv, write_json
from .references import REFERENCES, reference_dir

TABLES = ("matches.csv", "pair_results.csv", "runs.csv")


class ReferenceMismatch(ValueError):
    """The reference was made under another protocol or from other inputs than this run's."""


def new_methods(reference_cfg: DictConfig, composed: DictConfig) -> dict:
    """The composed config's methods that the reference does not have. A method key the reference has with other
    settings is an error (give it another key): its published row would otherwise be silently replaced."""
    ref = OmegaConf.to_container(reference_cfg.get("method") or {}, resolve=True)
    mine = OmegaConf.to_container(composed.get("method") or {}, resolve=True)
    clash = [k for k in mine if k in ref and ref[k] != mine[k]]
    if clash:
        raise ValueError(f"method key(s) {', '.join(clash)} are in the reference with other settings; give your method "
                         f"another key (e.g. +method.{clash[0]}_v2.name=...)")
    out = {k: m for k, m in mine.items() if k not in ref}
    if not out:
        raise ValueError("no new method to evaluate: every method of the command is already in the reference; add one with "
                         "plugins=[file.py] +method.KEY.name=REGISTERED_NAME or method=[NAME]")
    return out


def check_compatible(reference: dict, new: dict) -> None:
    """Refuse a reference made under another protocol version or from other pair inputs (scores.json of both)."""
    problems = []
    ref_p, new_p = reference.get("protocol") or {}, new.get("protocol") or {}
    if ref_p.get("version") != new_p.get("version"):
        problems.append(f"scoring protocol version {ref_p.get('version', 'unrecorded')} (reference) vs {new_p.get('version')} (this code)")
    ref_in, new_in = ref_p.get("pair_inputs") or {}, new_p.get("pair_inputs") or {}
    differ = sorted(p for p in new_in if ref_in.get(p) != new_in[p])
    if differ:
        problems.append(f"pair inputs (models, organisms, corpus, layers, dtype) of {len(differ)} pair(s), e.g. {differ[0]}")
    if problems:
        raise ReferenceMismatch("the reference does not match this run: " + "; ".join(problems) + ". Regenerate the reference "
                                "with this code (diffbench suite=... then scripts/publish_run.py), or evaluate against one "
                                "made with it")


def run(reference: str, composed: DictConfig, run_dir: Path) -> Path:
    """Evaluate the composed config's new methods against `reference`; returns the run folder."""
    from . import pipeline
    from .stages import report

    ref_dir = reference_dir(reference)
    ref_cfg = OmegaConf.load(ref_dir / "config.yaml")
    ref_scores = read_json(ref_dir / "scores.json")
    if not (ref_scores.get("protocol") or {}).get("version"):
        raise ReferenceMismatch(f"the reference {ref_dir} records no protocol version (made before diffbench evaluate "
                                "existed); regenerate it with this code")
    from .score.scoring import PROTOCOL_VERSION

    if ref_scores["protocol"]["version"] != PROTOCOL_VERSION:  # before any work; the pair inputs are checked after
        check_compatible(ref_scores, {"protocol": {"version": PROTOCOL_VERSION, "pair_inputs": {}}})
    methods = new_methods(ref_cfg, composed)
    cfg = OmegaConf.merge(ref_cfg, {"run_dir": str(run_dir), "stages": ["plant", "collect", "diff", "score"],
                                    "plugins": list(composed.get("plugins") or []), "progress": bool(composed.get("progress", True)),
                                    "pairs": None, "cache_dir": composed.get("cache_dir")})
    cfg.method = methods
    if (ref_scores["protocol"].get("dtype") or "auto") != "auto":  # the reference's realised dtype, not this CPU's pick
        cfg.dtype = ref_scores["protocol"]["dtype"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if (ref_dir / "strong").is_dir() and not (run_dir / "strong").exists():
        # the reference's causal-channel cache: its null draws are this run's (same models, prompts and settings, a
        # cache key checks it), so only the new methods' directions are generated
        shutil.copytree(ref_dir / "strong", run_dir / "strong")
    atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    t0 = time.time()
    pipeline.run(cfg, run_dir, ["plant", "collect", "diff", "score"])
    new_scores = read_json(run_dir / "scores.json")
    check_compatible(ref_scores, new_scores)
    merge_into(run_dir, ref_dir, ref_scores, new_scores, ref_cfg)
    index = report.run(run_dir)
    from .report.leaderboard import lead_table

    print("\n" + lead_table(run_dir) + "\n", flush=True)
    print(f"[diffbench] evaluated {', '.join(methods)} against {ref_dir.name} in {time.time() - t0:.0f}s\n"
          f"leaderboard: {run_dir / 'leaderboard.md'}\nHTML report: {index}", flush=True)
    return run_dir


def merge_into(run_dir: Path, ref_dir: Path, ref_scores: dict, new_scores: dict, ref_cfg: DictConfig) -> None:
    """The run folder becomes the reference plus the new methods: metrics, seeds and method records of both in
    scores.json, the reference's rows followed by the new ones in each table, the reference's HTML pages kept."""
    merged = dict(ref_scores)
    for key in ("metrics", "methods", "seeds"):
        merged[key] = {**(ref_scores.get(key) or {}), **(new_scores.get(key) or {})}
    merged["evaluated"] = {"reference": ref_dir.name, "methods": sorted(new_scores.get("metrics") or {})}
    write_json(run_dir / "scores.json", merged)
    for name in TABLES:
        rows = read_csv(ref_dir / name) + read_csv(run_dir / name)
        if rows:
            write_csv(run_dir / name, rows)
    if (ref_dir / "html").is_dir():  # the reference methods' findings pages (their findings are not republished)
        for page in (ref_dir / "html").glob("*--*.html"):
            if not (run_dir / "html" / page.name).exists():
                (run_dir / "html").mkdir(exist_ok=True)
                shutil.copyfile(page, run_dir / "html" / page.name)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.method = OmegaConf.merge(ref_cfg.get("method") or {}, cfg.method)
    cfg.stages = ["score", "report"]
    atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
