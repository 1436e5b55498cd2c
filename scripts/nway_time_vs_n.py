"""Seconds per N-way method against N, on the same organisms, corpus and settings: the first N members of one group of
a finished N-way run (N = 2 .. the group's size), each method timed once per N on activations the run already
collected (no collection is timed). Prints a table and writes it with the machine and commit.

    python scripts/nway_time_vs_n.py RUN_DIR --group single6 [--out results/nway-smollm2-135m/time_vs_n.md]

Run it on an idle machine: other jobs beside it make every figure useless.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from diffbench.core.env import dtype_name, say, source_commit
from diffbench.core.io import atomic_write
from diffbench.harness.pair_run import run_group_method
from diffbench.harness.report.leaderboard import machine_description
from diffbench.harness.stages import nway
from diffbench.harness.suite import BASE
from diffbench.harness.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--group", required=True, help="a group of the run; its first N members for N = 2..its size")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = OmegaConf.load(args.run_dir / "config.yaml")
    with open_dict(cfg):
        cfg.plugins = []
    if cfg.get("cache_dir"):
        import os

        os.environ["DIFFBENCH_CACHE"] = str(cfg.cache_dir)
    scratch = args.run_dir / "time_vs_n"
    ws = Workspace(cfg, scratch)
    from diffbench.harness.stages import plant

    plant.run(ws, quiet=True)  # the members' adapters (shipped or cached): nothing is trained
    group = next((g for g in ws.suite.groups if g.id == args.group), None)
    if group is None:
        raise SystemExit(f"no group {args.group!r} in {args.run_dir}; groups: {[g.id for g in ws.suite.groups]}")
    full = nway.group_context(ws, group)  # every store from the collection cache
    texts = ws.corpus(BASE)
    rows: dict[str, dict[int, float]] = {}
    for n in range(2, group.n + 1):
        sub = replace(group, id=f"{group.id}[:{n}]", members=group.members[:n])
        ctx = replace(full, group_id=sub.id, models=full.models[:n],
                      corpus=replace(full.corpus, stores=full.corpus.stores[:n]), work_dir=scratch / sub.id)
        for key, method in ws.nway_built.items():
            t0 = time.time()
            out = run_group_method(method, ctx, texts, ws.collect_cfg.max_length)
            rows.setdefault(key, {})[n] = time.time() - t0 if out.status == "ok" else float("nan")
            say(f"N={n} {key}: {out.status} {rows[key][n]:.1f}s {out.error[:80]}")
    sizes = list(range(2, group.n + 1))
    lines = [f"# Seconds per N-way method run against N ({args.group}'s first N members)", "",
             f"Command: `python scripts/nway_time_vs_n.py {args.run_dir.name} --group {args.group}`; commit "
             f"{source_commit()}; machine: {machine_description()}; dtype {dtype_name(ws.model(BASE).dtype)}; one seed, "
             "stores read from the run's collection cache (collection not timed).", "",
             "| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for key, v in rows.items():
        lines.append(f"| {key} | " + " | ".join(f"{v[n]:.1f}" for n in sizes) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write(args.out, text)


if __name__ == "__main__":
    main()
