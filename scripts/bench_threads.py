#!/usr/bin/env python
"""CPU threads for the diff stage's methods: 1 vs all cores, alone and beside one busy process, measured in one run.

    python scripts/bench_threads.py [--seconds 20] [--competitor]

The methods take a `threads` option whose `auto` picks the thread count (core/env.py: pick_threads). This script
measures what that choice costs on this machine for three workloads the diff stage runs:

  crosscoder  one BatchTopK crosscoder training step (2,048 latents, batch 256, SmolLM2-sized rows)
  forward     one SmolLM2-135M forward pass with its LM head over 8 x 96 tokens (logprob_diff, kl_diff)
  encode      one random-dictionary evaluation chunk (4,096 rows through 2,048 latents, decode included)

  decode      one KV-cached decode step of SmolLM2-135M (bf16) for 128 rows (the causal channel's generation)

each in a fresh process at 1 thread and at every core, with OMP_WAIT_POLICY unset and =PASSIVE (OpenMP
threads then sleep at barriers instead of spinning), and with --spin N also unset with GOMP_SPINCOUNT=N (a
short spin before sleeping: libgomp's default is 300,000 iterations). With --competitor each is repeated beside a second
process that keeps one core busy with its own single-threaded matmuls (a shared machine: a CI job, a second
run). Prints work per second per setting and the ratio to 1 thread alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def workload(name: str):
    import torch

    if name == "crosscoder":
        from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss
        from diffbench.methods.crosscoder._lib.module import Crosscoder, Ops
        from diffbench.methods.crosscoder._lib.train import TrainConfig

        cc = Crosscoder([576, 576], 2048, 0, 0, seed=0)
        xs = [torch.randn(256, 576) + 1.0 for _ in range(2)]
        cfg = TrainConfig(sparsity="batchtopk", k=32, aux_k=64, steps=1000, backend="torch", bf16=False)
        ops, opt = Ops("torch", False), torch.optim.Adam(cc.parameters(), lr=1e-3, fused=True)
        dead = torch.zeros(cc.n, dtype=torch.bool)
        dead[:200] = True

        def step(i: int) -> None:
            loss, _ = _batchtopk_loss(cc, xs, cfg, ops, dead, 64, i, {})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step
    if name == "forward":
        from transformers import LlamaConfig, LlamaForCausalLM

        # SmolLM2-135M's shapes (random weights: the cost is the same, and nothing is loaded from disk)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg).eval()
        ids = torch.randint(0, 49152, (8, 96))

        @torch.inference_mode()
        def fwd(i: int) -> None:
            model(input_ids=ids, use_cache=False)
        return fwd
    if name == "decode":
        from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg).eval().to(torch.bfloat16)  # dtype auto on AVX512-BF16 CPUs, as the scorer runs
        with torch.inference_mode():
            prefix = DynamicCache(config=cfg)
            model(input_ids=torch.randint(0, 49152, (128, 36)), cache=prefix, use_cache=True, logits_to_keep=1)
        step_ids = torch.randint(0, 49152, (128, 1))

        @torch.inference_mode()
        def dec(i: int) -> None:
            if i % 8 == 0:  # a fresh 36-token prefix every 8 steps, as the scorer's 8-token continuations
                dec.cache = DynamicCache(config=cfg)
                for src, dst in zip(prefix.layers, range(cfg.num_hidden_layers)):
                    dec.cache.update(src.keys.clone(), src.values.clone(), dst)
            model(input_ids=step_ids, cache=dec.cache, use_cache=True)
        return dec
    if name == "encode":
        from diffbench.methods.crosscoder._lib.module import Crosscoder

        cc = Crosscoder([576, 576], 2048, 0, 0, seed=0)
        cc.threshold.fill_(1.0)
        xs = [torch.randn(4096, 576) for _ in range(2)]

        @torch.no_grad()
        def enc(i: int) -> None:
            cc.decode(cc.encode(xs, "threshold"))
        return enc
    raise ValueError(name)


def child(name: str, threads: int, seconds: float) -> None:
    import torch

    torch.set_num_threads(threads)
    run = workload(name)
    for i in range(2):  # warm-up
        run(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run(n)
        n += 1
    print(json.dumps({"per_s": n / (time.perf_counter() - t0)}))


def competitor() -> None:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while True:
        a = torch.tanh(a @ a.t() / 512)


def measure(name: str, threads: int, seconds: float, policy: str) -> float:
    """policy: "default" (OMP_WAIT_POLICY unset), "passive", or "spin<N>" (unset, GOMP_SPINCOUNT=N)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    out = subprocess.run([sys.executable, __file__, "--_child", name, str(threads), str(seconds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--competitor", action="store_true", help="also measure beside a process that keeps one core busy")
    ap.add_argument("--workloads", nargs="+", default=["crosscoder", "forward", "encode", "decode"])
    ap.add_argument("--spin", type=int, nargs="*", default=[], help="also measure with GOMP_SPINCOUNT=N (policy unset)")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args._child[0], int(args._child[1]), float(args._child[2]))
        return
    cores = os.cpu_count() or 1
    print(f"# {cores} cores; {args.seconds:.0f} s per measurement; work units per second (ratio to 1 thread alone)")
    print(f"{'workload':12s} {'setting':28s} {'1 thread':>16s} {f'{cores} threads':>16s}")
    for name in args.workloads:
        for busy in ([False, True] if args.competitor else [False]):
            comp = subprocess.Popen([sys.executable, "-c", f"import runpy, sys; sys.argv=['x']; "
                                     f"m = runpy.run_path({__file__!r}); m['competitor']()"]) if busy else None
            try:
                if comp is not None:
                    time.sleep(2)
                for policy in ["default", "passive"] + [f"spin{n}" for n in args.spin]:
                    one = measure(name, 1, args.seconds, policy)
                    many = measure(name, cores, args.seconds, policy)
                    if not busy and policy == "default":
                        base = one
                    setting = ("beside a busy core" if busy else "alone") + {
                        "default": "", "passive": ", OMP passive"}.get(policy, f", GOMP_SPINCOUNT={policy[4:]}")
                    print(f"{name:12s} {setting:28s} {one:8.2f} ({one / base:4.2f}) {many:8.2f} ({many / base:4.2f})", flush=True)
            finally:
                if comp is not None:
                    comp.kill()
                    comp.wait()


if __name__ == "__main__":
    main()
