"""Plant (and gate) only the named organisms of a suite: `python scripts/plant_only.py SUITE RUN_DIR NAME...`.

The suite's other behaviors still define the null gate's T sets; cards go to RUN_DIR/plant_cards."""
import sys
from pathlib import Path
from hydra import compose, initialize_config_module
from diffbench.harness.stages import plant
from diffbench.harness.workspace import Workspace
suite, run_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with initialize_config_module(config_module="diffbench.conf", version_base=None):
    cfg = compose("config", overrides=[f"suite={suite}", f"run_dir={run_dir}", "progress=false"])
plant.run(Workspace(cfg, Path(run_dir)), only=names)
