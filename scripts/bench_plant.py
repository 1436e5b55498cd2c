"""Planting throughput: organisms trained one at a time vs together (harness/plant/multilora.py), measured in one run.

    python scripts/bench_plant.py [--organisms 4] [--steps 10] [--out results/plant_throughput.txt]

The same N organisms (hand-written specs, the narrow recipe of conf/plant/lora.yaml, `--steps` steps each) are
trained twice from the same self-distilled data (prepared first, not timed): N runs of one organism, then one run of
all N, every step one forward and backward over the N organisms' batches. Both write nothing to the cache. Prints
seconds and organisms per hour of training for each, and the ratio; the gate is not included (it is generation, per
organism either way). Results are for this machine's CPU (named in the output).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from diffbench.harness.models import load_model
from diffbench.harness.plant.organism import Organism
from diffbench.harness.plant.train import _train_group, training_examples
from diffbench.harness.plant.zoo import machine
from diffbench.tasks.spec import BehaviorSpec, available_behaviors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organisms", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    recipe = yaml.safe_load((Path(__file__).resolve().parent.parent / "conf/plant/lora.yaml").read_text())
    recipe["steps"] = args.steps
    behaviors = available_behaviors()[: args.organisms]
    specs = {b: BehaviorSpec.load(b) for b in behaviors}
    orgs = [Organism(b, "behavior", (b,), seed=7) for b in behaviors]
    base = load_model(args.model, dtype=args.dtype, device="cpu")
    for o in orgs:  # self-distilled answers, cached: both arms read the same data
        training_examples(o, specs, base, recipe, progress=False)
    lines = [f"# {' '.join(['python scripts/bench_plant.py', f'--organisms {args.organisms}', f'--steps {args.steps}'])}",
             f"# machine: {machine()['cpu']}, torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {args.dtype}",
             f"# {len(orgs)} organisms ({', '.join(behaviors)}), rank {recipe['rank']}, batch {recipe['batch_size']} per organism, "
             f"{args.steps} steps each"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        for i, o in enumerate(orgs):
            _train_group(args.model, base, [o], [Path(tmp) / f"alone{i}"], specs, recipe, progress=False)
        alone = time.time() - t0
        t0 = time.time()
        _train_group(args.model, base, orgs, [Path(tmp) / f"together{i}" for i in range(len(orgs))], specs, recipe, progress=False)
        together = time.time() - t0
    per_hour = lambda s: 3600 * len(orgs) / s
    lines += [f"one at a time : {alone:7.1f} s  {per_hour(alone):6.1f} organisms/hour ({args.steps} steps)",
              f"together (G={len(orgs)}): {together:7.1f} s  {per_hour(together):6.1f} organisms/hour ({args.steps} steps)",
              f"speed-up      : {alone / together:.2f}x"]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
