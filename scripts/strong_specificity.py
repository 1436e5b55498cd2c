#!/usr/bin/env python
"""Are a run's strong (causal) hits specific? For every strong hit in RUN_DIR's matches.csv, ablate its direction from
the organism (model B) on the unit's first 8 held-out trigger (T) and control (C) prompts, with 10 random unit
directions at the same layer beside it, and print per direction:

  |h.u|/|h|   how much of model B's residual lies along it (mean over the prompts' tokens, first token excluded)
  T rate      the behavior rate on T after the ablation (the causal channel's "ablate" arm: before minus after)
  T / C changed  the share of T and C prompts whose 8-token greedy continuation changes at all

A direction that carries the behavior removes it on T and leaves C alone; one that damages the model changes C too.
Generation settings are the causal channel's (harness/score/strong.py). Needs the run's cache (DIFFBENCH_CACHE) and
findings/; one thread, so it can run beside other jobs.

    DIFFBENCH_CACHE=CACHE python scripts/strong_specificity.py RUN_DIR [MATCHES_CSV]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from diffbench.core.capture import capture_residuals
from diffbench.core.findings import load_findings
from diffbench.harness.data.generate import chat_prompt
from diffbench.harness.stages import plant as plant_stage
from diffbench.harness.score.steering import Intervention, behavior_rates, intervened_generate
from diffbench.harness.score.strong import changed_share
from diffbench.harness.workspace import Workspace

N_PROMPTS, N_RANDOM, NEW_TOKENS = 8, 10, 8


def main(run: Path, matches: Path) -> None:
    torch.set_num_threads(1)
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=[f"run_dir={run}", "progress=false"])
    ws = Workspace(cfg, run)
    plant_stage.run(ws)  # the organisms from the cache
    rows = [r for r in csv.DictReader(open(matches)) if r["strong_match"] == "True"]
    for pair, beh in sorted({(r["pair"], r["behavior"]) for r in rows}):
        mb = ws.model(pair.split("__")[1])
        spec = ws.suite.specs[beh]
        T, C = spec.probes(ws.suite.n_probes)
        prompts = {"T": [p.text for p in T[:N_PROMPTS]], "C": [p.text for p in C[:N_PROMPTS]]}
        by_layer: dict[int, list] = {}
        for r in rows:
            if (r["pair"], r["behavior"]) == (pair, beh):
                f = load_findings(run / "findings" / r["method"] / f"{pair}@s{r['seed']}.json")[0][int(r["rank"])]
                by_layer.setdefault(int(f.direction_layer), []).append((f"{r['method']} #{r['rank']} (ablate {float(r['strong_ablate']):.3f})",
                                                                        f.direction.float()))
        for layer, items in sorted(by_layer.items()):
            g = torch.Generator().manual_seed(layer)
            items = items + [(f"random {i}", torch.randn(mb.hidden_size, generator=g)) for i in range(N_RANDOM)]
            units = torch.stack([d / d.norm() for _, d in items])
            proj = []
            for text in prompts["T"] + prompts["C"]:
                ids = mb.tokenizer(chat_prompt(mb.tokenizer, text), return_tensors="pt").input_ids
                h = capture_residuals(mb, ids, torch.ones_like(ids), [layer])[layer][0, 1:].float()
                proj.append((h @ units.T).abs().mean(0) / h.norm(dim=1).mean())
            proj = torch.stack(proj).mean(0)
            out = {s: intervened_generate(mb, p, Intervention("ablate", layer, units), max_new_tokens=NEW_TOKENS, batch_size=64,
                                          include_baseline=True, progress=False) for s, p in prompts.items()}
            rate = behavior_rates(out["T"], spec.detector)
            changed = {s: changed_share(o) for s, o in out.items()}
            print(f"== {pair} / {beh}, layer {layer}: behavior rate of B on T {rate[0]:.2f}", flush=True)
            for j, (name, _) in enumerate(items):
                print(f"  {name:48s} |h.u|/|h| {float(proj[j]):.3f}  T rate {rate[j + 1]:.2f}  "
                      f"T changed {changed['T'][j]:.2f}  C changed {changed['C'][j]:.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    run_dir = Path(sys.argv[1])
    main(run_dir, Path(sys.argv[2]) if len(sys.argv) == 3 else run_dir / "matches.csv")
