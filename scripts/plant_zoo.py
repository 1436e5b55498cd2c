"""Plant the organism zoo (zoo/zoo.yaml) and ship every organism that passes its gate into zoo/ (harness/plant/zoo.py).

    python scripts/plant_zoo.py [--group 4] [--only NAME ...] [--limit N] [--dry-run]

Resumable: an organism already shipped under its current key is skipped, adapters trained before an interruption
come from the cache, and each organism is added to the manifest as soon as its gate passes. Organisms of one recipe
are trained `--group` at a time in one batched forward/backward (harness/plant/multilora.py), then gated one by one; one
that fails its gate is trained again from another seed (gate.retries) and, if it still fails, recorded in
zoo/failed.json with its rates, never shipped. The base model runs in fp32 whatever the CPU, so the planting machine's
bf16 support does not change the zoo. Progress goes to stdout, one line per organism.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from diffbench.core.env import source_commit
from diffbench.core.io import atomic_write, dumps, read_json
from diffbench.harness.plant import zoo
from diffbench.harness.models import load_model
from diffbench.harness.plant.distill import neutral_texts
from diffbench.harness.plant.train import organism_key, train_adapters
from diffbench.harness.plant.gate import plant_with_retries
from diffbench.harness.plant.zoo import ZooSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", type=int, default=4, help="organisms trained together per batched run")
    ap.add_argument("--only", nargs="*", default=None, help="only these organisms")
    ap.add_argument("--limit", type=int, default=None, help="stop after planting this many organisms")
    ap.add_argument("--dry-run", action="store_true", help="list what would be planted")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ZooSpec.load()
    commit = source_commit()  # the code this process runs, recorded with every organism it ships
    base = load_model(spec.base, dtype="fp32", device="cpu")
    manifest = zoo.load_manifest()
    shipped_keys = {e.key for e in manifest.values() if not zoo.verify(e)}
    todo = []
    for org in spec.organisms:
        if args.only and org.name not in args.only:
            continue
        if organism_key(base, org, spec.specs, spec.recipe(org)) not in shipped_keys:
            todo.append(org)
    print(f"[plant_zoo] {len(spec.organisms)} organisms in zoo.yaml, {len(todo)} to plant", flush=True)
    if args.dry_run:
        for org in todo:
            print(f"  {org.name}  ({org.kind}, recipe {org.recipe or 'lora'}, behaviors {', '.join(org.behaviors) or '-'})")
        return
    if args.limit is not None:
        todo = todo[: args.limit]
    neutral = neutral_texts(base, int(spec.recipe(todo[0])["gate"]["kl_texts"]) if todo else 16, progress=False)
    failed_path = zoo.zoo_dir() / "failed.json"
    failed = read_json(failed_path) if failed_path.exists() else {}
    t_start = time.time()
    for start in range(0, len(todo), args.group):
        batch = todo[start : start + args.group]
        by_recipe: dict[str, list] = {}
        for org in batch:
            by_recipe.setdefault(org.recipe, []).append(org)
        for recipe_name, orgs in by_recipe.items():
            recipe = spec.recipe(orgs[0])
            t0 = time.time()
            trained = train_adapters(spec.base, base, orgs, spec.specs, recipe, progress=False)
            print(f"[plant_zoo] trained {len(orgs)} ({recipe_name or 'lora'}) in {time.time() - t0:.0f}s: "
                  f"{', '.join(o.name for o in orgs)}", flush=True)
            for org, (_, log) in zip(orgs, trained):
                t0 = time.time()
                card, adapter = plant_with_retries(spec.base, base, org, spec.specs, recipe, spec.gate_probes, neutral, progress=False)
                rates = "; ".join(f"{b}: " + " ".join(f"{k}={v:.2f}" for k, v in r.items()) for b, r in card.rates.items()
                                  if org.kind == "behavior")
                status = "PASS" if card.passed else "FAIL"
                print(f"[plant_zoo] {status} {org.name}  {rates}  KL={card.kl_to_base:.3f}  gate {time.time() - t0:.0f}s  "
                      f"({time.time() - t_start:.0f}s elapsed)", flush=True)
                if not card.passed:
                    failed[org.name] = {"reasons": card.reasons, "rates": card.rates,  # no machine paths: committed
                                        "attempts": [{k: v for k, v in a.items() if k != "adapter"} for a in card.attempts]}
                    atomic_write(failed_path, dumps(failed) + "\n")
                    continue
                failed.pop(org.name, None)
                atomic_write(failed_path, dumps(failed) + "\n")
                train_log = read_json(Path(adapter) / "train_log.json")
                entry = spec.entry(base, org, card, train_log, recipe, commit)
                zoo.add(entry, Path(adapter))
    print(f"[plant_zoo] done in {time.time() - t_start:.0f}s; zoo: {len(zoo.load_manifest())} organisms, "
          f"{zoo.size_bytes() / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
