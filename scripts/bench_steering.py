"""The causal channel's generation: shared prefill (the default) vs the plain path, measured in one run.

    python scripts/bench_steering.py [--model smollm2-135m] [--dtype auto] [--directions 64] [--prompts 8]
                                     [--layers 15 29] [--new-tokens 8] [--batch 128] [--repeats 2]

For each layer, the same norm-matched random directions (the scorer's null draws are such directions) are added to
the model on a behavior's held-out trigger prompts, through `intervened_generate` with `shared_prefill` True and
False, alternating (so a loaded machine slows both alike), `--repeats` times each. Prints rows/s of each path, the
median ratio, and how many of the continuations agree (they differ only by batch-composition rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffbench.core.env import cpu_threads
from diffbench.harness.models import load_model
from diffbench.harness.score.steering import Intervention, intervened_generate
from diffbench.tasks.spec import BehaviorSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--behavior", default="topic_censorship")
    ap.add_argument("--directions", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[15, 29])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scale", type=float, default=8.0, help="direction norm (SmolLM2's per-token difference is ~1-10)")
    args = ap.parse_args()

    model = load_model(args.model, dtype=args.dtype)
    trig, _ = BehaviorSpec.load(args.behavior).probes(args.prompts)
    prompts = [p.text for p in trig][: args.prompts]
    g = torch.Generator().manual_seed(0)
    print(f"{args.model} ({model.dtype}), {len(prompts)} prompts x ({args.directions} directions + baseline), "
          f"{args.new_tokens} new tokens, batch {args.batch}, threads {torch.get_num_threads()}")
    with cpu_threads("auto", model.device):
        for layer in args.layers:
            v = torch.randn(args.directions, model.hidden_size, generator=g)
            iv = Intervention("add", layer, args.scale * v / v.norm(dim=1, keepdim=True))
            secs: dict[bool, list[float]] = {True: [], False: []}
            outs: dict[bool, list[list[str]]] = {}
            for _ in range(args.repeats):
                for shared in (True, False):
                    t0 = time.perf_counter()
                    outs[shared] = intervened_generate(model, prompts, iv, max_new_tokens=args.new_tokens,
                                                       batch_size=args.batch, shared_prefill=shared)
                    secs[shared].append(time.perf_counter() - t0)
            rows = len(prompts) * (args.directions + 1)
            agree = sum(a == b for ra, rb in zip(outs[True], outs[False]) for a, b in zip(ra, rb))
            ratio = statistics.median(p / s for p, s in zip(secs[False], secs[True]))
            print(f"layer {layer:>3}: shared {rows / statistics.median(secs[True]):7.1f} rows/s, "
                  f"plain {rows / statistics.median(secs[False]):7.1f} rows/s, speedup x{ratio:.2f} "
                  f"(median of {args.repeats} alternating pairs); identical continuations {agree}/{rows}")


if __name__ == "__main__":
    main()
