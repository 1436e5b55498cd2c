#!/usr/bin/env python
"""Crosscoder training throughput and peak memory: torch path vs Triton path.

For each variant (l1, batchtopk, dfc), dictionary size and k, one steady-state training step is
what the methods run (main loss + auxiliary loss on a fixed 10% of "dead" latents for the
BatchTopK variants + gradient clipping + Adam), on random 576-d activations for a model pair.
Reports tokens/s and the peak memory of training (CUDA: max allocated; CPU: peak RSS of a fresh
process above its RSS once data and model exist), and Triton/torch ratios where both run.

On CPU only the torch path runs (the Triton kernels need CUDA; the tests run them under the
interpreter for correctness only). On CUDA both run, plus a micro-benchmark of the sparse Triton
decoder against the dense decode (scatter to a dense code + matmul) at 32k latents, k=64.

    python scripts/bench_crosscoder.py                 # CPU: small grid, ~2 minutes
    python scripts/bench_crosscoder.py --full          # dict 4k..64k x k 32..128
    python scripts/bench_crosscoder.py --device cuda   # both paths (default when CUDA is present)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

D_MODEL = 576  # SmolLM2-135M


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(variant: str, n: int, k: int, backend: str, batch: int, steps: int, warmup: int, device: str,
            threads: int | None) -> dict:
    from diffbench.methods.crosscoder._lib.module import Crosscoder, Ops
    from diffbench.methods.crosscoder._lib.train import TrainConfig
    from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss, _l1_loss

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    excl = int(round(0.05 * n)) if variant == "dfc" else 0
    cc = Crosscoder([D_MODEL, D_MODEL], n - 2 * excl, excl, excl, seed=0, dec_init_norm=0.1 if variant == "l1" else 1.0).to(dev)
    # low-rank-ish activations with a mean, like a residual stream after normalisation
    basis = torch.randn(64, D_MODEL, device=dev)
    xs_all = [torch.randn(batch * 4, 64, device=dev) @ basis / 8 + torch.randn(batch * 4, D_MODEL, device=dev) * 0.3 + 1.0
              for _ in range(2)]
    for b, x in zip(cc.b_dec, xs_all):
        b.data.copy_(x.mean(0))
    sparsity = "l1" if variant == "l1" else "batchtopk"
    cfg = TrainConfig(sparsity=sparsity, k=k, aux_k=64, steps=1000, backend=backend,
                      bf16=(device == "cpu" and _cpu_bf16()))
    ops = Ops(backend, cfg.bf16)
    opt = torch.optim.Adam(cc.parameters(), lr=1e-3)
    dead = torch.zeros(cc.n, dtype=torch.bool, device=dev)
    dead[torch.randperm(cc.n, generator=torch.Generator().manual_seed(1))[: cc.n // 10].to(dev)] = True

    def step(i: int):
        xb = [x[(i % 4) * batch : (i % 4 + 1) * batch] for x in xs_all]
        if sparsity == "l1":
            loss, _ = _l1_loss(cc, xb, 1.0, ops, cfg, {})
        else:
            loss, _ = _batchtopk_loss(cc, xb, cfg, ops, dead, 64, i, {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cc.parameters(), 1.0)
        opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base_rss = _rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    for i in range(warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync()
    el = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"variant": variant, "n": n, "k": k if sparsity == "batchtopk" else None, "backend": backend,
            "tokens_per_s": batch * steps / el, "ms_per_step": el / steps * 1e3, "peak_mib": max(peak, 0) / 2**20,
            "threads": torch.get_num_threads()}


def _cpu_bf16() -> bool:
    from diffbench.core.env import cpu_has_bf16

    return cpu_has_bf16()


def decoder_microbench(n=32768, k=64, batch=4096, d=D_MODEL, iters=21) -> list[dict]:
    """Sparse Triton decoder vs dense decode (and the torch sparse reference), forward + backward.

    Two timings per decoder, each the median of `iters` calls timed with CUDA events:
    * eager: one call as the training loop makes it, synchronised, so the host's launch overhead
      (Python, autograd, ~13 small ops for the sparse path) counts when the GPU waits for it;
    * graph: the same call captured once in a CUDA graph and replayed: device time only.
    """
    from diffbench.methods.crosscoder._lib import kernels as K
    from diffbench.methods.crosscoder._lib import reference as R

    dev = torch.device("cuda")
    w = torch.randn(n, d, device=dev, requires_grad=True)
    b = torch.zeros(d, device=dev, requires_grad=True)
    idx = torch.stack([torch.randperm(n, device=dev)[:k] for _ in range(batch)])
    vals = torch.rand(batch, k, device=dev, requires_grad=True)
    g = torch.randn(batch, d, device=dev)

    def dense():
        f = torch.zeros(batch, n, device=dev).scatter(1, idx, vals)
        return [torch.addmm(b, f, w)]

    fns = {"triton sparse": lambda: K.sparse_decode_padded(idx, vals, [w], [(0, n)], [b]),
           "dense (scatter + matmul)": dense,
           "torch sparse (embedding_bag)": lambda: R.sparse_decode_padded(idx, vals, [w], [(0, n)], [b])}

    def call(fn):
        w.grad = vals.grad = b.grad = None
        fn()[0].backward(g)

    def timed(run) -> float:
        times = []
        for _ in range(iters):
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ev0.record()
            run()
            ev1.record()
            ev1.synchronize()
            times.append(ev0.elapsed_time(ev1))
        return sorted(times)[len(times) // 2]

    out = []
    for name, fn in fns.items():
        for _ in range(3):
            call(fn)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        eager = timed(lambda: call(fn))
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        graph_ms = None
        try:  # whole fwd+bwd in one CUDA graph (warm-up on a side stream, grads allocated in the capture)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    call(fn)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            w.grad = vals.grad = b.grad = None
            with torch.cuda.graph(graph):
                fn()[0].backward(g)
            graph.replay()
            torch.cuda.synchronize()
            graph_ms = timed(graph.replay)
            del graph
        except Exception as e:  # report, don't fail the benchmark
            print(f"# {name}: CUDA graph capture failed: {type(e).__name__}: {str(e)[:200]}")
        w.grad = vals.grad = b.grad = None
        torch.cuda.synchronize()
        out.append({"decoder": name, "ms_fwd_bwd": eager, "ms_fwd_bwd_graph": graph_ms, "peak_mib": peak})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full", action="store_true", help="dict sizes 4k,16k,64k x k 32,64,128")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--variants", default="l1,batchtopk,dfc")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", default="auto", help="CPU threads: auto (calibrated), or a number")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:  # one measurement in a fresh process (CPU peak RSS is per process)
        spec = json.loads(args._child)
        print(json.dumps(run_one(**spec)))
        return

    cpu = args.device == "cpu"
    sizes = args.sizes or ([4096, 16384, 65536] if args.full else ([4096, 16384] if cpu else [4096, 16384, 65536]))
    ks = args.ks or ([32, 64, 128] if args.full or not cpu else [32, 128])
    batch = args.batch or (256 if cpu else 4096)
    steps = args.steps or (5 if cpu else 20)
    warmup = 2 if cpu else 5
    backends = ["torch"] if cpu else ["torch", "triton"]
    threads = None
    if cpu:
        from diffbench.core.env import pick_threads

        threads = pick_threads(args.threads if args.threads == "auto" else int(args.threads), torch.device("cpu"))
        threads = threads or torch.get_num_threads()
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # the fused Triton encoder uses tf32 too

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # pragma: no cover
        triton_version = "not installed"
    print("# command: python scripts/bench_crosscoder.py " + " ".join(sys.argv[1:]))
    print(f"# device={args.device} ({torch.cuda.get_device_name() if not cpu else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, triton {triton_version}"
          + (f", CUDA {torch.version.cuda}" if not cpu else "")
          + f", CPU threads={threads if cpu else torch.get_num_threads()}, "
          f"cores={os.cpu_count()}, load avg={os.getloadavg()[0]:.1f}")
    print(f"# crosscoder training throughput, d_model={D_MODEL}, two models, batch={batch}, "
          f"{steps} timed steps after {warmup} warm-up")
    if cpu:
        print("# Triton path: not run (the kernels need CUDA; on CPU they only run interpreted, in the tests)")
        print("# peak = peak RSS of a fresh process above its RSS once data and model exist")
    else:
        print("# peak = torch.cuda.max_memory_allocated above the allocation once data and model exist")
    rows = []
    t_start = time.perf_counter()
    for variant in args.variants.split(","):
        for n in sizes:
            for k in ([None] if variant == "l1" else ks):
                row = {}
                for backend in backends:
                    spec = dict(variant=variant, n=n, k=k or 32, backend=backend, batch=batch, steps=steps,
                                warmup=warmup, device=args.device, threads=threads)
                    if cpu:
                        r = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)],
                                           capture_output=True, text=True, check=False)
                        if r.returncode != 0:
                            raise RuntimeError(r.stderr[-3000:])
                        res = json.loads(r.stdout.strip().splitlines()[-1])
                    else:
                        res = run_one(**spec)
                        torch.cuda.empty_cache()
                    row[backend] = res
                    rows.append(res)
                line = f"{variant:10s} n={n:6d} k={str(k or '-'):>4s} | torch {row['torch']['tokens_per_s']:10.0f} tok/s " \
                       f"{row['torch']['ms_per_step']:8.1f} ms/step peak {row['torch']['peak_mib']:8.1f} MiB"
                if "triton" in row:
                    t, tr = row["torch"], row["triton"]
                    line += f" | triton {tr['tokens_per_s']:10.0f} tok/s peak {tr['peak_mib']:8.1f} MiB" \
                            f" | speed x{tr['tokens_per_s'] / t['tokens_per_s']:.2f} mem x{tr['peak_mib'] / max(t['peak_mib'], 1e-9):.2f}"
                print(line, flush=True)
    if not cpu:
        print("# decoder only, n=32768, k=64, batch=4096, d=576, fwd+bwd (values, decoder rows, bias), median of 21;")
        print("# eager = synchronised call incl. host launch overhead; graph = CUDA-graph replay (device time)")
        micro = decoder_microbench()
        tri = micro[0]
        for r in micro:
            gr = r["ms_fwd_bwd_graph"]
            line = f"{r['decoder']:30s} eager {r['ms_fwd_bwd']:7.3f} ms (x{r['ms_fwd_bwd'] / tri['ms_fwd_bwd']:.2f})"
            if gr is not None and tri["ms_fwd_bwd_graph"] is not None:
                line += f"  graph {gr:7.3f} ms (x{gr / tri['ms_fwd_bwd_graph']:.2f})"
            print(line + f"  peak {r['peak_mib']:8.1f} MiB   (xN = time / triton sparse)")
            rows.append(r)
    print(f"# total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
