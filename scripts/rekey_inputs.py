# usage: python scripts/rekey_inputs.py RUN_DIR   (then: diffbench report RUN_DIR)
"""Rescore a run folder whose findings were saved before collect.batch_size joined the pair-inputs key (d569694).

Its models, corpus, layers and batch size are this run's (the script checks nothing else: use it only on a folder
whose config.yaml is the one it ran with), so each status record gets the current key and `diffbench report`
rescores the saved findings instead of refusing them."""
import json, sys
from pathlib import Path
from omegaconf import OmegaConf
from diffbench.harness.workspace import Workspace
from diffbench.harness.stages import plant
import os
run = Path(sys.argv[1])
cfg = OmegaConf.load(run / "config.yaml")
os.environ["DIFFBENCH_CACHE"] = str(cfg.cache_dir)
ws = Workspace(cfg, run)
plant.run(ws, quiet=True)
n = 0
for pair in ws.suite.pairs:
    if ws.pair_status(pair) != "ok":
        continue
    key = ws.pair_inputs(pair)
    for st in run.glob(f"findings/*/{pair.id}@s*.status.json"):
        rec = json.loads(st.read_text())
        if rec.get("inputs_hash") and rec["inputs_hash"] != key:
            rec["inputs_hash"] = key
            st.write_text(json.dumps(rec))
            n += 1
print("rekeyed", n)
