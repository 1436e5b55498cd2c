#!/usr/bin/env python
"""Our BatchTopK crosscoder vs the dictionary_learning family's BatchTopK crosscoder trainer, side by side on CPU.

Both train on the same real paired activation rows (a base model and one organism at one layer, 576-d per
model for SmolLM2-135M; the crosscoder reads both rows), with the same batch, number of steps and CPU threads,
and are scored on the same held-out rows (a fixed share of the texts). Ours runs through the method's own code
path (`BatchTopKCrosscoder`'s config -> `train_config` -> `init_from_data` -> `train` -> `evaluate` with the
method's inference rule); the reference runs its `BatchTopKCrossCoderTrainer.update` loop and is scored with its
own inference rule (`encode(use_threshold=True)`, its running-average threshold).

Reported per (training rows, width, k): held-out explained variance per model, held-out L0 (mean active latents
per row), dead fraction (latents that never fire on the held-out rows), training seconds (initialisation and all
steps), peak memory (peak RSS of a fresh process above its RSS once data, model and torch's lazily imported
optimiser modules exist) and the speed ratio
(reference seconds / ours). Each run is a fresh child process; ours and the reference alternate, so a change in
the machine's load hits both.

The reference is not fetched or vendored: point --reference at a local checkout of the crosscoder-diffing fork
of dictionary_learning (the one with `dictionary_learning/trainers/crosscoder.py`):

    git clone https://github.com/jkminder/dictionary_learning /path/to/dictionary_learning
    pip install --target /path/to/ref-deps einops          # its only import our venv lacks on this path
    python scripts/compare_crosscoder.py --cache /path/to/cache --reference /path/to/dictionary_learning \
        --reference-deps /path/to/ref-deps

Long grids can be split (`--only ours` / `--only reference`, other --rows/--widths/--ks) with `--json F --resume`
(reuses finished runs; ours only while its crosscoder code is unchanged) and tabulated with `--cached-only`.

Without a usable --reference the reference columns are skipped (and the script says how to get it). Its data
utilities import `datasets` and `zstandard`, which the crosscoder path never calls; when they are not installed
the script puts empty placeholder modules in their place.

Reference settings: the same learning rate and schedule as ours (lr 3e-3, warm-up over the first 5% of the steps,
linear decay over the last 20%; its threshold EMA from 10% of the steps, as ours), everything else its defaults
(threshold EMA beta 0.999, aux_k = d/2, L2-norm loss, decoder bias from the geometric median, no input
normaliser: it reads the same normalised rows as ours, uncentred). `--reference-lr auto` gives it its own
lr = 2e-4 / sqrt(n / 2^14) instead, which did worse here (held-out EV 0.69 vs 0.80 at 4,096 latents, k=32).

Data: `--cache DIR` picks the base model's (--base) and an organism's (--organism) activation stores on the same
text set under DIR/activations (or give `--store-a/--store-b`); rows are prepared exactly as the crosscoder methods do
(`method.prepare_data`: position 0 and outliers dropped, one scale per model to mean norm sqrt(d), held-out
texts by a fixed seed). `--rows 7900,all`: the training rows (a seeded subset, or all); the held-out rows are
the same for every row count. `--synthetic` makes sparse-dictionary rows instead (development only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from diffbench.core.env import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> int:
    """Reset the process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across fork+exec) -> RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _rss_bytes()


def _peak_above(base: int) -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return max(0, int(line.split()[1]) * 1024 - base) / 2**20
    except OSError:
        pass
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / 2**20


# ----------------------------------------------------------------------------- data


def find_stores(cache: Path, base: str, organism: str, layer: int | None) -> tuple[Path, Path]:
    """The base model's and the organism's complete activation stores over the same text set (the audit corpus:
    the largest shared one) under cache/activations."""
    stores = []
    for m in sorted((cache / "activations").glob("*/manifest.json")):
        man = json.loads(m.read_text())
        if man.get("complete") and (layer is None or layer in man.get("layers", [])):
            stores.append((m.parent, man))
    pairs = [(int(ma.get("n_tokens", 0)), ra, rb) for ra, ma in stores for rb, mb in stores
             if ma.get("model") == base and mb.get("model") == organism and ma.get("text_key") == mb.get("text_key")]
    if not pairs:
        raise SystemExit(f"no complete {base} / {organism} activation stores on one text set under {cache}/activations")
    _, ra, rb = max(pairs, key=lambda p: p[0])
    return ra, rb


def prepare(args) -> dict:
    """-> {"train": {label: [x_a, x_b]}, "eval": {label: [x_a, x_b]}, "info": str} (normalised rows, float32)."""
    from diffbench.methods.crosscoder._lib.method import CrosscoderConfig, DataOptions, prepare_data

    if args.synthetic:
        return synthetic(args)
    from diffbench.core.activations import ActivationStore, PairedActivations

    if args.store_a and args.store_b:
        ra, rb = Path(args.store_a), Path(args.store_b)
    else:
        ra, rb = find_stores(Path(args.cache), args.base, args.organism, args.layer)
    a, b = ActivationStore.open(ra), ActivationStore.open(rb)
    corpus = PairedActivations(a, b, a.n_texts)
    layer = args.layer if args.layer is not None else a.layers[len(a.layers) // 2]
    out: dict = {"train": {}}
    for label in args.rows:
        opts = DataOptions.of(CrosscoderConfig(layer=layer, eval_frac=args.eval_frac, max_tokens=10**12 if label == "all" else int(label),
                                               max_eval_tokens=10**12))
        ctx = types.SimpleNamespace(corpus=corpus, middle_layer=layer, layers_b=None, seed=0, device="cpu")
        data = prepare_data(ctx, opts)
        out["train"][label] = data.train
        out.setdefault("eval", {})[label] = data.eval  # the same rows for every row count, scaled as its training rows
    n_all = max(x[0].shape[0] for x in out["train"].values())
    n_eval = {x[0].shape[0] for x in out["eval"].values()}
    assert len(n_eval) == 1
    # the info is part of every run's cache key: it names the data, not which row counts this invocation asked for
    out["info"] = (f"stores {ra.name} (A) vs {rb.name} (B), layer {layer}, {n_eval.pop()} held-out rows "
                   f"({args.eval_frac:.0%} of the texts)")
    out["n_all"] = n_all
    return out


def synthetic(args) -> dict:
    """Rows made of a sparse ground-truth dictionary (shared by both models, 5% per model only), plus a mean."""
    g = torch.Generator().manual_seed(0)
    d, n_true, n_rows, n_eval = 576, 6000, 40_000, 6000
    dic = torch.randn(n_true, 2, d, generator=g)
    dic /= dic.norm(dim=-1, keepdim=True)
    dic[: n_true // 20, 1] = 0  # A-only features
    dic[n_true // 20 : n_true // 10, 0] = 0  # B-only
    freq = torch.rand(n_true, generator=g) ** 3 * 0.02
    mean = torch.randn(2, d, generator=g) * 2

    def rows(n):
        act = (torch.rand(n, n_true, generator=g) < freq) * torch.rand(n, n_true, generator=g) * 3
        x = torch.einsum("bf,fmd->bmd", act, dic) + mean + 0.05 * torch.randn(n, 2, d, generator=g)
        return [x[:, 0].contiguous(), x[:, 1].contiguous()]

    tr, ev = rows(n_rows), rows(n_eval)
    scales = [d**0.5 / float(x.norm(dim=1).mean()) for x in tr]
    tr = [x * c for x, c in zip(tr, scales)]
    ev = [x * c for x, c in zip(ev, scales)]
    out = {"train": {}, "eval": {}, "info": f"synthetic sparse rows, {n_rows} training, {n_eval} held-out"}
    for label in args.rows:
        n = n_rows if label == "all" else int(label)
        out["train"][label] = [x[:n].clone() for x in tr]
        out["eval"][label] = ev
    return out


# ----------------------------------------------------------------------------- one run (child process)


def _ev(xs, xhat_fn, chunk=2048) -> dict:
    sse, l0, n_rows = [0.0, 0.0], 0.0, xs[0].shape[0]
    fires = None
    for s in range(0, n_rows, chunk):
        xb = [x[s : s + chunk] for x in xs]
        f, xh = xhat_fn(xb)
        for m in range(2):
            sse[m] += float((xb[m] - xh[m]).pow(2).sum())
        act = f > 0
        l0 += float(act.sum())
        fires = act.sum(0) if fires is None else fires + act.sum(0)
    sst = [float((x - x.mean(0)).pow(2).sum()) for x in xs]
    return {"ev_a": 1 - sse[0] / sst[0], "ev_b": 1 - sse[1] / sst[1], "l0": l0 / n_rows,
            "dead": float((fires == 0).float().mean())}


def run_ours(train, ev, n, k, steps, batch, seed, overrides) -> dict:
    from diffbench.methods.crosscoder._lib.module import Crosscoder
    from diffbench.methods.crosscoder._lib.train import init_from_data, train as train_cc
    from diffbench.methods.crosscoder.batchtopk import BatchTopKCrosscoder

    meth = BatchTopKCrosscoder(dict_size=n, k=k, steps=steps, batch_size=batch, **overrides)
    ctx = types.SimpleNamespace(seed=seed, device="cpu")
    tc = meth.train_config(ctx, "torch")
    tc.threads = None  # the child has set the thread count
    width = meth.trained_width()  # dict_size capped by the run's samples (BatchTopKConfig.samples_per_latent)
    cc = Crosscoder([x.shape[1] for x in train], width, seed=seed, **meth.init_kwargs())
    base = _reset_peak()
    t0 = time.perf_counter()
    init_from_data(cc, train, seed=seed, data_frac=meth.cfg.data_init_frac)
    train_cc(cc, train, tc)
    seconds = time.perf_counter() - t0
    peak = _peak_above(base)
    cc.eval()
    out = {"seconds": seconds, "peak_mib": peak, "threshold": float(cc.threshold), "trained_width": width}
    modes = {"ours": lambda xb: (lambda f: (f, cc.decode(f)))(cc.encode(xb, "threshold")),
             "batchtopk": lambda xb: (lambda f: (f, cc.decode(f)))(cc.encode(xb, "batchtopk", k=k))}
    ema = getattr(cc, "ema_threshold", None)
    for name, fn in modes.items():
        out[name] = _ev(ev, fn)
    if ema is not None and ema == ema:
        keep = float(cc.threshold)
        cc.threshold.fill_(ema)
        out["ema"] = _ev(ev, modes["ours"])
        cc.threshold.fill_(keep)
        out["ema_threshold"] = ema
    sub = [x[:4096] for x in train]
    out["train_ours"] = _ev(sub, modes["ours"])
    return out


def _placeholder_modules() -> None:
    """The reference's utils import `datasets` and `zstandard` for its data loaders, which this path never calls."""
    import importlib.util

    for name in ("datasets", "zstandard"):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            mod = types.ModuleType(name)
            mod.load_dataset = None
            sys.modules[name] = mod


def import_reference(path: str | None, deps: str | None):
    """-> (BatchTopKCrossCoderTrainer, commit) or (None, reason)."""
    if not path:
        return None, "no --reference given"
    p = Path(path)
    if not (p / "dictionary_learning" / "trainers" / "crosscoder.py").exists():
        return None, f"{p} has no dictionary_learning/trainers/crosscoder.py"
    for extra in (deps, str(p)):
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
    _placeholder_modules()
    # the package __init__ pulls in activation buffers (nnsight); load the two modules we need without it
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = [str(p / "dictionary_learning")]
    sys.modules.setdefault("dictionary_learning", pkg)
    tpkg = types.ModuleType("dictionary_learning.trainers")
    tpkg.__path__ = [str(p / "dictionary_learning" / "trainers")]
    sys.modules.setdefault("dictionary_learning.trainers", tpkg)
    try:
        from dictionary_learning.trainers.crosscoder import BatchTopKCrossCoderTrainer
    except ImportError as e:
        return None, f"cannot import the reference from {p}: {e} (see --help: --reference-deps)"
    try:
        commit = subprocess.run(["git", "-C", str(p), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return BatchTopKCrossCoderTrainer, commit or "?"


def run_reference(train, ev, n, k, steps, batch, seed, ref_path, ref_deps, lr) -> dict:
    Trainer, commit = import_reference(ref_path, ref_deps)
    if Trainer is None:
        raise RuntimeError(commit)
    if lr == "same":
        from diffbench.methods.crosscoder.batchtopk import BatchTopKCrosscoder

        lr = BatchTopKCrosscoder().cfg.lr
    xs = torch.stack(train, dim=1)  # [N, 2, d]
    n_rows = xs.shape[0]
    trainer = Trainer(steps=steps, activation_dim=xs.shape[2], dict_size=n, k=k, layer=0, lm_name="pair",
                      num_layers=2, lr=None if lr in (None, "auto") else float(lr),
                      warmup_steps=max(1, int(0.05 * steps)), decay_start=int(0.8 * steps),
                      threshold_start_step=int(0.1 * steps), seed=seed, device="cpu")
    g = torch.Generator().manual_seed(seed + 1)
    perm, cursor = torch.randperm(n_rows, generator=g), 0
    base = _reset_peak()
    t0 = time.perf_counter()
    for step in range(steps):
        if cursor + batch > n_rows:
            perm, cursor = torch.randperm(n_rows, generator=g), 0
        xb = xs.index_select(0, perm[cursor : cursor + batch])
        cursor += batch
        trainer.update(step, xb)
    seconds = time.perf_counter() - t0
    peak = _peak_above(base)
    ae = trainer.ae.eval()

    @torch.no_grad()
    def fn(xb, use_threshold=True):
        x = torch.stack(xb, dim=1)
        f = ae.encode(x, use_threshold=use_threshold)
        xh = ae.decode(f)
        return f, [xh[:, 0], xh[:, 1]]

    out = {"seconds": seconds, "peak_mib": peak, "threshold": float(ae.threshold), "lr": trainer.lr, "commit": commit,
           "ours": _ev(ev, fn), "batchtopk": _ev(ev, lambda xb: fn(xb, False), chunk=256)}
    out["train_ours"] = _ev([x[:4096] for x in train], fn)
    return out


def child(spec: dict) -> dict:
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(spec["seed"])
    # one-time process set-up outside the measurement, for both sides: the first fused Adam imports ~900 torch
    # modules (~150 MiB RSS, seconds), which is not training memory or time
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
    blob = torch.load(spec["data"])
    train, ev = blob["train"][spec["rows"]], blob["eval"][spec["rows"]]
    common = dict(n=spec["n"], k=spec["k"], steps=spec["steps"], batch=spec["batch"], seed=spec["seed"])
    if spec["impl"] == "ours":
        out = run_ours(train, ev, overrides=spec.get("overrides") or {}, **common)
    else:
        out = run_reference(train, ev, ref_path=spec["reference"], ref_deps=spec.get("reference_deps"),
                            lr=spec.get("reference_lr"), **common)
    out["threads"] = torch.get_num_threads()
    return out


# ----------------------------------------------------------------------------- driver


def built_width(res: dict) -> int:
    """Latents the dictionary was built and trained with (ours caps dict_size by its samples; the reference builds
    every latent it is asked for)."""
    return int(res.get("trained_width", res["n"]))


def speed_ratio(row: dict) -> float | None:
    """Reference seconds / our seconds for one (rows, width, k) cell, or None unless both implementations ran and built
    dictionaries of the same width: a 4,096-latent dictionary beside a 16,384-latent one is not a speed comparison."""
    if "ours" not in row or "reference" not in row:
        return None
    if built_width(row["ours"]) != built_width(row["reference"]):
        return None
    return row["reference"]["seconds"] / row["ours"]["seconds"]


def _strip_code(key: str) -> str:
    d = json.loads(key)
    d.pop("code", None)
    return json.dumps(d, sort_keys=True)


def _code_hash() -> str:
    """Hash of our crosscoder's code: a resumed comparison reruns ours when it changed."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted((ROOT / "methods" / "crosscoder").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.environ.get("DIFFBENCH_CACHE"), help="diffbench cache dir (has activations/)")
    ap.add_argument("--base", default="smollm2-135m", help="with --cache: model A (the base model)")
    ap.add_argument("--organism", default="topic_censorship", help="with --cache: model B (an organism)")
    ap.add_argument("--store-a", help="base model's activation store folder (instead of --cache)")
    ap.add_argument("--store-b", help="organism's activation store folder")
    ap.add_argument("--layer", type=int, help="residual layer (default: the stores' middle collected layer)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic sparse rows (development)")
    ap.add_argument("--rows", default="7900,all", help="training row counts, comma-separated ('all' = every row)")
    ap.add_argument("--eval-frac", type=float, default=0.15, help="share of texts held out")
    ap.add_argument("--widths", default="4096,16384")
    ap.add_argument("--ks", default="32,100")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", help="local checkout of the crosscoder-diffing dictionary_learning fork")
    ap.add_argument("--reference-deps", help="extra sys.path entry with the reference's imports (einops)")
    ap.add_argument("--reference-lr", default="same", help="reference learning rate: same (as ours), auto (its 1/sqrt(n) rule) or a number")
    ap.add_argument("--ours", default="{}", help="JSON overrides of our BatchTopKConfig (experiments)")
    ap.add_argument("--only", choices=["ours", "reference"], help="run one side only")
    ap.add_argument("--out", help="also write the table here (e.g. results/crosscoder_vs_reference_cpu.txt)")
    ap.add_argument("--note", action="append", default=[], help="a line for the table's header (how the runs were made)")
    ap.add_argument("--json", help="also write every run's numbers as JSON here")
    ap.add_argument("--cached-only", action="store_true",
                    help="with --resume: tabulate the runs already in --json (whatever code they ran), run nothing")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the runs in --json whose settings (and, for ours, crosscoder code) are unchanged")
    ap.add_argument("--save-rows", help="write the prepared rows ({train: {rows: [x_a, x_b]}, eval}) here and stop")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:
        print("\n" + json.dumps(child(json.loads(args._child))))
        return
    torch.set_num_threads(args.threads)
    args.rows = args.rows.split(",")
    if args.reference_lr == "same":
        from diffbench.methods.crosscoder.batchtopk import BatchTopKCrosscoder

        args.reference_lr = str(BatchTopKCrosscoder().cfg.lr)
    if not (args.synthetic or args.cache or (args.store_a and args.store_b)):
        ap.error("give --cache, --store-a/--store-b or --synthetic")
    impls = ["ours", "reference"]
    ref_ok, ref_note = import_reference(args.reference, args.reference_deps) if args.only != "ours" else (None, "--only ours")
    if ref_ok is None:
        impls = ["ours"]
        if args.only != "ours":
            print(f"# reference skipped: {ref_note}. Get it with\n#   git clone https://github.com/jkminder/dictionary_learning "
                  "<dir> && pip install --target <deps> einops\n# and pass --reference <dir> --reference-deps <deps>")
    if args.only == "reference":
        impls = [i for i in impls if i == "reference"]
    t_all = time.perf_counter()
    data = prepare(args)
    if args.save_rows:
        torch.save({"train": data["train"], "eval": data["eval"], "info": data["info"]}, args.save_rows)
        print(f"# rows written to {args.save_rows}: {data['info']}")
        return
    from diffbench.core.env import source_commit

    lines = [
        "# command: python scripts/compare_crosscoder.py " + " ".join(a for a in sys.argv[1:]),
        f"# diffbench commit {source_commit()}; reference: {args.reference or '-'} at commit {ref_note if ref_ok else '-'}",
        f"# machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads={args.threads}, load avg at start {os.getloadavg()[0]:.1f}",
        f"# data: {data['info']}; {data.get('n_all', '-')} training rows in the largest row count",
        f"# training: batch {args.batch}, {args.steps} steps, seed {args.seed}; widths {args.widths}, k {args.ks}",
        "# EV = held-out explained variance per model (A, B), each with its own inference rule (ours: the BatchTopK",
        "#   config's threshold; reference: its EMA threshold); built = latents the dictionary is built and trained with",
        "#   (ours: width capped at steps x batch / samples_per_latent, BatchTopKConfig; the reference builds every latent",
        "#   and many die); L0 = held-out mean active latents per row; dead = share of the built latents never active",
        "#   on the held-out rows; s = seconds of training; MiB = peak RSS above the start;",
        "#   speed = reference s / ours s. Diagnostics (ours): EV with batch-top-k inference, with the training EMA",
        "#   threshold, and training-row EV/L0 (4,096 rows) with the inference threshold.",
    ] + [f"# note: {n}" for n in args.note]
    for ln in lines:
        print(ln, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        blob = os.path.join(tmp, "rows.pt")
        torch.save({"train": data["train"], "eval": data["eval"]}, blob)
        results = []
        done = {}
        if args.resume and args.json and Path(args.json).exists():
            done = {r["key"]: r for r in json.loads(Path(args.json).read_text()) if "key" in r}
        code = _code_hash()
        hdr = (f"{'rows':>6} {'width':>6} {'k':>4} {'impl':>9} {'built':>6} | {'EV_A':>6} {'EV_B':>6} {'L0':>6} {'dead':>5} | "
               f"{'s':>6} {'MiB':>6} {'speed':>5} | {'EV btk':>6} {'EV ema':>6} {'trEV':>6} {'trL0':>6}")
        print(hdr, flush=True)
        table = [hdr]
        for label in args.rows:
            n_rows = data["train"][label][0].shape[0]
            for n in [int(w) for w in args.widths.split(",")]:
                for k in [int(x) for x in args.ks.split(",")]:
                    row = {}
                    for impl in impls:
                        spec = dict(impl=impl, data=blob, rows=label, n=n, k=k, steps=args.steps, batch=args.batch,
                                    seed=args.seed, threads=args.threads, reference=args.reference,
                                    reference_deps=args.reference_deps, reference_lr=args.reference_lr,
                                    overrides=json.loads(args.ours))
                        key = json.dumps({**{k_: v for k_, v in spec.items() if k_ not in ("data", "reference", "reference_deps")},
                                          "n_rows": n_rows, "code": code if impl == "ours" else None,
                                          "info": data["info"]}, sort_keys=True)
                        if key in done:
                            res = done[key]
                        elif args.cached_only:  # the table of runs made earlier (our code may have moved since)
                            res = next((r_ for k_, r_ in done.items() if _strip_code(k_) == _strip_code(key)), None)
                            if res is None:
                                continue
                        else:
                            r = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)],
                                               capture_output=True, text=True, check=False, cwd=str(ROOT))
                            if r.returncode != 0:
                                raise RuntimeError(r.stderr[-4000:])
                            res = json.loads(r.stdout.strip().splitlines()[-1])
                            res.update(impl=impl, rows=n_rows, n=n, k=k, key=key)
                        row[impl] = res
                        results.append(res)
                        if args.json:
                            Path(args.json).write_text(json.dumps(results + [v for k_, v in done.items()
                                                                             if k_ not in {r_["key"] for r_ in results}], indent=1))
                    for impl, res in row.items():
                        o = res["ours"]
                        speed = speed_ratio(row) if impl == "ours" else None  # None across built widths
                        ema = res.get("ema", {}).get("ev_a")
                        line = (f"{n_rows:>6} {n:>6} {k:>4} {impl:>9} {built_width(res):>6} | {o['ev_a']:6.3f} {o['ev_b']:6.3f} {o['l0']:6.1f} "
                                f"{o['dead']:5.2f} | {res['seconds']:6.0f} {res['peak_mib']:6.0f} "
                                f"{(f'{speed:5.2f}' if speed else '    -')} | {res['batchtopk']['ev_a']:6.3f} "
                                f"{(f'{ema:6.3f}' if ema is not None else '     -')} {res['train_ours']['ev_a']:6.3f} "
                                f"{res['train_ours']['l0']:6.1f}")
                        print(line, flush=True)
                        table.append(line)
    tail = f"# total {time.perf_counter() - t_all:.0f} s"
    print(tail)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines + table + [tail]) + "\n")


if __name__ == "__main__":
    main()
