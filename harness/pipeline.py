"""The pipeline: plant -> corpus + collect -> diff -> score -> report, each stage cached and resumable.

    ws = Workspace(cfg, run_dir)          # validated config, nodes, models, the audit corpus
    plant.run(ws)                         # LoRA organisms + plant cards
    collect.run(ws)                       # audit corpus, activations of every model on it and on the probes
    diff.run(ws)                          # every method on every pair: findings/
    nway.diff(ws)                         # every N-way method on every group (the suite's groups:): nway/findings/
    score.run(ws)                         # findings vs planted ground truth: scores.json, matches.csv
    nway.score(ws, score.Scorer(ws))      # group findings vs the groups' ground truth: nway_scores.json
    report.run(run_dir)                   # leaderboard.md, plots

Every stage can run alone (`stages=[collect]`). Stages after plant need the organisms, so the plant stage runs
first whenever one of them is asked for: its products are content-addressed in the cache, so it trains nothing
that exists. `score` and `report` read the run folder's saved findings and scores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core.env import cpu_threads
from ..core.io import read_json, write_json
from .stages import collect, diff, nway, plant, report, score
from .tracking import Tracker
from ..core.env import say
from .workspace import Workspace

STAGES = ("plant", "collect", "diff", "score", "report")


def run(cfg: DictConfig, run_dir: Path, stages: list[str]) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if cfg.get("cache_dir"):  # the run's cache (a rescore of a run folder finds the products it was made from)
        os.environ["DIFFBENCH_CACHE"] = str(cfg.cache_dir)
    ws = Workspace(cfg, run_dir)
    if {"plant", "collect", "diff"} & set(stages):  # a corpus the specs cannot supply fails now, not after planting
        for node in dict.fromkeys(ws.base_of(p.a) for p in ws.suite.pairs):
            ws.corpus_plan(node)
        ws.check_layers()  # ... and so does a layer the model does not have
    tracker = Tracker(cfg.get("wandb", {}), str(ws.run_dir), OmegaConf.to_container(cfg, resolve=True))
    t0 = time.time()
    seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        ts = time.time()
        say(f"--- stage {stage} ---")
        out = fn(*args)
        seconds[stage] = time.time() - ts
        tracker.log({f"time/{stage}": seconds[stage]})
        say(f"stage {stage} done in {seconds[stage]:.0f}s")
        return out

    # one thread count for every stage, restored after (library callers keep theirs): a launcher's worker may start
    # with fewer, and results depend on the count (core/env.py: pick_threads)
    with cpu_threads(cfg.get("threads", "auto"), ws.device) as threads:
        try:
            if "plant" in stages:
                timed("plant", plant.run, ws)
            elif {"collect", "diff", "score"} & set(stages):
                plant.run(ws, quiet=True)  # the organisms the later stages need (from the cache)
            if "collect" in stages:
                timed("collect", collect.run, ws)
            if "diff" in stages and ws.suite.pairs:
                timed("diff", diff.run, ws)
            if "diff" in stages and ws.suite.groups:
                timed("diff_nway", nway.diff, ws)
            if "score" in stages and ws.suite.pairs:
                scores = timed("score", score.run, ws)
                for method, summary in scores["metrics"].items():
                    tracker.log({f"{method}/{k}": v["value"] for k, v in summary.items() if not k.startswith("_")})
            if "score" in stages and ws.suite.groups:
                timed("score_nway", nway.score, ws, score.Scorer(ws))
            if "report" in stages:
                timed("report", report.run, ws.run_dir)
        finally:
            tracker.finish()
    record_timing(ws.run_dir, stages, time.time() - t0, seconds, threads)
    say(f"done in {time.time() - t0:.0f}s; run folder: {ws.run_dir}")
    if "report" in stages and (ws.run_dir / "leaderboard.md").exists():
        from .report.leaderboard import lead_table

        html = ws.run_dir / "html" / "index.html"
        print("\n" + lead_table(ws.run_dir) + f"\n\nleaderboard: {ws.run_dir / 'leaderboard.md'}"
              + (f"\nHTML report: {html}" if html.exists() else ""), flush=True)


def record_timing(run_dir: Path, stages: list[str], seconds: float, stage_seconds: dict[str, float], threads: int) -> None:
    """timing.json keeps every invocation of this run folder (a resumed or rescored run adds one), and
    `stage_seconds` holds each stage's latest time: the times that made the folder's current products."""
    path = run_dir / "timing.json"
    try:
        old = read_json(path) if path.exists() else {}
    except ValueError:
        old = {}
    invocations = old.get("invocations") or ([{k: old[k] for k in ("stages", "seconds", "stage_seconds") if k in old}] if old else [])
    invocations.append({"stages": stages, "seconds": seconds, "stage_seconds": stage_seconds,
                        "threads": threads, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    latest = {k: v for inv in invocations for k, v in inv.get("stage_seconds", {}).items()}
    write_json(path, {"stage_seconds": latest, "seconds": sum(latest.values()), "invocations": invocations})
