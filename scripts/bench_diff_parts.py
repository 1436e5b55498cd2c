#!/usr/bin/env python
"""The diff stage's hot spots, old way vs new way, measured in one process on a real run's stores.

    python scripts/bench_diff_parts.py RUN_DIR CACHE_DIR [--pair N] [--repeats 2]

RUN_DIR is a run whose plant, collect and diff stages are done (its random_dictionary findings are read);
CACHE_DIR its cache. One thread (what the methods use on <= 4 cores). Prints seconds and ratios for:
  readouts   the findings' per-token scores over the pair's corpus: one readout at a time (Readout.__call__,
             what snippets did before) vs all of a layer at once (core.findings.read_many)
  decode     one 4,096-row chunk of a 2,048-latent inference code: dense matmul vs Crosscoder.decode_code
  rd_find    one random_dictionary run (fit + select) with the dense vs the sparse inference decode
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("cache_dir")
    ap.add_argument("--pair", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    os.environ["DIFFBENCH_CACHE"] = args.cache_dir
    torch.set_num_threads(1)
    from hydra import compose, initialize_config_module

    from diffbench.core import METHODS, load_findings
    from diffbench.core.findings import read_many
    from diffbench.harness.stages import plant
    from diffbench.harness.workspace import Workspace
    from diffbench.methods.crosscoder._lib.module import Crosscoder

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=[f"cache_dir={args.cache_dir}", f"run_dir={args.run_dir}", "progress=false"])
    ws = Workspace(cfg, args.run_dir)
    plant.run(ws, quiet=True)
    pair = ws.suite.pairs[args.pair]
    ctx = ws.pair_context(pair, 0)
    findings, _ = load_findings(ws.finding_path("random_dictionary", pair, 0))
    la, lb = ctx.corpus.load(findings[0].readout.layer_a, findings[0].readout.layer_b)
    readouts = [f.readout for f in findings]
    print(f"# pair {pair.id}: {la.acts.shape[0]} corpus rows, {len(readouts)} random_dictionary findings; 1 thread")

    one = timed(lambda: [r(la.acts, lb.acts) for r in readouts], args.repeats)
    many = timed(lambda: read_many(readouts, la.acts, lb.acts), args.repeats)
    print(f"readouts  one at a time {min(one):6.2f} s   read_many {min(many):6.2f} s   x{min(one) / min(many):.1f}")

    cc = Crosscoder([576, 576], 2048, 0, 0, seed=0)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4096, 576, generator=g) for _ in range(2)]
    with torch.no_grad():
        z = torch.relu(cc.preacts(xs)) * cc.selection_norms()
        cc.threshold.fill_(float(torch.quantile(z.flatten()[:1_000_000], 1 - 48 / 2048)))
        f = cc.encode(xs, "threshold")
    dense = timed(lambda: cc.decode(f), args.repeats + 3)
    sparse = timed(lambda: cc.decode_code(f), args.repeats + 3)
    l0 = float((f > 0).sum(1).float().mean())
    print(f"decode    dense {min(dense):6.3f} s   decode_code {min(sparse):6.3f} s   x{min(dense) / min(sparse):.1f}   (L0 {l0:.0f})")

    keep = Crosscoder.decode_code
    results = {}
    for name, fn in (("dense", lambda self, f, max_density=0.1: self.decode(f)), ("sparse", keep)):
        Crosscoder.decode_code = fn
        results[name] = timed(lambda: METHODS.get("random_dictionary")().find(ctx), args.repeats)
    Crosscoder.decode_code = keep
    print(f"rd_find   dense decode {min(results['dense']):6.2f} s   sparse decode {min(results['sparse']):6.2f} s   "
          f"x{min(results['dense']) / min(results['sparse']):.2f}")


if __name__ == "__main__":
    main()
