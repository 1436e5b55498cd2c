# usage: python scripts/rekey_configs.py RUN_DIR [--pair PAIR_ID]   (then: diffbench run_dir=RUN_DIR stages=[diff,score,report])
"""Keep a run's saved findings across a change of the method-config hash recipe, after checking they are still what
the current code computes.

Findings are reused only under the same `config_hash` (harness/stages/diff.py). The typed method configs (fb09dd6)
changed how that hash is computed (the resolved dataclass config instead of the YAML params), so every finding saved
before then is recomputed by the diff stage although its method and options are the same. This script recomputes,
for each method of the run, its findings on one pair (`--pair`, default the first planted pair; floors: seed 0 only)
with the current code and compares them with the saved ones (ids, uniqueness to 1e-5 relative, flags). A method whose
findings match on that pair gets the current hash on all its status records; one that differs keeps its old hash,
so the diff stage recomputes it everywhere. Prints one line per method."""
import argparse
import json
import math
import os
from pathlib import Path

from omegaconf import OmegaConf

from diffbench.core import METHODS, load_findings, rank
from diffbench.harness.stages import plant
from diffbench.harness.workspace import Workspace

ap = argparse.ArgumentParser()
ap.add_argument("run", type=Path)
ap.add_argument("--pair", default=None)
args = ap.parse_args()
cfg = OmegaConf.load(args.run / "config.yaml")
os.environ["DIFFBENCH_CACHE"] = str(cfg.cache_dir)
ws = Workspace(cfg, args.run)
plant.run(ws, quiet=True)
pair = next(p for p in ws.suite.pairs if (p.id == args.pair if args.pair else p.kind == "planted"))


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.id == y.id and x.flagged == y.flagged and math.isclose(float(x.uniqueness), float(y.uniqueness), rel_tol=1e-5, abs_tol=1e-8)
        for x, y in zip(a, b))


for key, mcfg in ws.methods.items():
    new_hash = ws.config_hashes[key]
    stats = sorted(args.run.glob(f"findings/{key}/*.status.json"))
    stale = [s for s in stats if json.loads(s.read_text()).get("config_hash") not in (new_hash, None, "")]
    if not stale:
        print(f"{key:22s} up to date ({len(stats)} records)")
        continue
    seed = ws.seeds_for(mcfg["name"])[0]
    path = ws.finding_path(key, pair, seed)
    saved, _ = load_findings(path)
    ctx = ws.pair_context(pair, seed, work_dir=Path("/tmp/rekey-work"))
    import torch

    torch.manual_seed(seed)
    fresh = rank(METHODS.get(mcfg["name"])(**(mcfg.get("params") or {})).find(ctx))
    if not same(saved, fresh):
        print(f"{key:22s} DIFFERS on {pair.id} seed {seed}: kept stale ({len(stale)} records will be recomputed)")
        continue
    for s in stale:
        rec = json.loads(s.read_text())
        rec["config_hash"] = new_hash
        s.write_text(json.dumps(rec))
    print(f"{key:22s} identical on {pair.id} seed {seed} ({len(fresh)} findings): rekeyed {len(stale)} records")
