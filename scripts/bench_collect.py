"""Collection throughput vs a bare forward pass of the same batches, measured in one run.

    python scripts/bench_collect.py [--model smollm2-135m] [--texts 256] [--layers 0.5] [--dtype auto]

Prints tokens/s for
  1. a bare forward pass (the full model, logits included) over the length-sorted batches,
  2. the same forward stopped after the deepest requested layer (what collection computes),
  3. `collect` itself into a fresh store (hooks, copies, safetensors shards, sha256, manifest),
and the ratios: store cost over (2) is the store's own overhead; (3) vs (1) is what a
user saves compared with running the model and keeping hidden states.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from diffbench.harness.models import load_model
from diffbench.core.activations import TextSet
from diffbench.core.capture import capture_residuals
from diffbench.harness.data.store import _plan_shards, collect, tokenize_texts
from diffbench.tasks.neutral import neutral_prompts


def batches(model, texts, batch_size, max_length):
    ids = tokenize_texts(model.tokenizer, texts, max_length)
    lengths = [len(x) for x in ids]
    order, _ = _plan_shards(lengths, batch_size, 10**9)
    pad = model.tokenizer.pad_token_id or 0
    out = []
    for start in range(0, len(order), batch_size):
        b = order[start : start + batch_size]
        w = max(lengths[i] for i in b)
        x = torch.full((len(b), w), pad)
        m = torch.zeros((len(b), w), dtype=torch.long)
        for r, i in enumerate(b):
            x[r, : lengths[i]] = torch.tensor(ids[i])
            m[r, : lengths[i]] = 1
        out.append((x, m))
    return out, sum(lengths)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--layers", type=float, nargs="+", default=[0.5])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    model = load_model(args.model, dtype=args.dtype)
    texts = [f"{p} " + " ".join(neutral_prompts()[(i * 7) % 300 : (i * 7) % 300 + 6]) for i, p in enumerate(neutral_prompts()[: args.texts])]
    layers = sorted({model.layer_index(l if l < 1 else int(l)) for l in args.layers})
    bs, n_tok = batches(model, texts, args.batch_size, args.max_length)
    print(f"model {args.model} ({model.dtype}, {model.device}), {len(texts)} texts, {n_tok} tokens, layers {layers}, "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}")

    def bare():
        with torch.inference_mode():
            for x, m in bs:
                model.model(input_ids=x.to(model.device), attention_mask=m.to(model.device), use_cache=False)

    def truncated():
        for x, m in bs:
            capture_residuals(model, x.to(model.device), m.to(model.device), layers)

    def store():
        with tempfile.TemporaryDirectory() as tmp:
            collect(model, TextSet.of("bench", texts), layers, batch_size=args.batch_size, max_length=args.max_length,
                    root=Path(tmp), progress=False)

    bare()  # warm-up
    times = {"bare": [], "truncated": [], "store": []}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits all three alike
        for name, fn in (("bare", bare), ("truncated", truncated), ("store", store)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    for k in best:
        print(f"{k:10s} {n_tok / best[k]:9.0f} tok/s  ({best[k]:.2f} s, best of {args.repeats})")
    print(f"store / truncated forward (the store's own overhead): {best['store'] / best['truncated']:.3f}x")
    print(f"store / bare full forward: {best['store'] / best['bare']:.3f}x  (< 1: collection is cheaper than a bare forward)")


if __name__ == "__main__":
    main()
