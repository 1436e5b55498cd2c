"""`diffbench organisms`: the shipped organism zoo (harness/plant/zoo.py).

    diffbench organisms list [--family F] [--recipe R] [--kind K]   # name, family, recipe, behaviors, gate figures
    diffbench organisms verify [--gate] [NAME ...]                   # checksums; --gate re-runs the gates here
    diffbench organisms export DIR [NAME ...]                        # copy PEFT adapter folders (+ manifest entry)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import zoo


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffbench organisms", description="The shipped organism zoo.")
    sub = ap.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list shipped organisms with their gate figures")
    ls.add_argument("--family")
    ls.add_argument("--recipe")
    ls.add_argument("--kind")
    vf = sub.add_parser("verify", help="check every shipped file against the manifest's sha256")
    vf.add_argument("--gate", action="store_true", help="also re-run each organism's plant gate on this machine (slow)")
    vf.add_argument("names", nargs="*")
    ex = sub.add_parser("export", help="copy organisms as standard PEFT adapter folders")
    ex.add_argument("dir", type=Path)
    ex.add_argument("names", nargs="*")
    return ap


def _rates(entry: zoo.ZooEntry) -> str:
    parts = []
    for b, r in entry.gate.get("rates", {}).items():
        if entry.kind != "behavior":
            continue
        parts.append(f"{b}: T {r.get('organism_T', 0):.2f} C {r.get('organism_C', 0):.2f} base {r.get('base_T', 0):.2f}")
    return "; ".join(parts) or "-"


def _list(args) -> int:
    manifest = zoo.load_manifest()
    rows = [e for e in manifest.values()
            if (not args.family or args.family in e.family) and (not args.recipe or e.recipe == args.recipe)
            and (not args.kind or e.kind == args.kind)]
    for e in rows:
        fams = ",".join(sorted({f or "hand-written" for f in e.family})) or "-"
        print(f"{e.name:48s} {e.kind:18s} {fams:22s} {e.recipe:6s} KL {e.gate.get('kl_to_base', 0):.3f}  {_rates(e)}")
    units = sum(len(e.behaviors) for e in rows)
    print(f"{len(rows)} organisms, {units} planted behaviors among them (analog copies included); "
          f"{zoo.size_bytes() / 1e6:.1f} MB in {zoo.zoo_dir() / 'organisms'}")
    return 0


def _verify(args) -> int:
    manifest = zoo.load_manifest()
    names = args.names or sorted(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        print(f"diffbench organisms: error: not in the zoo: {', '.join(unknown)}", file=sys.stderr)
        return 2
    bad = 0
    for n in names:
        problems = zoo.verify(manifest[n])
        bad += bool(problems)
        for p in problems:
            print(f"DAMAGED {p}")
    print(f"checksums: {len(names) - bad} of {len(names)} organisms intact")
    if args.gate and not bad:
        bad += _regate([manifest[n] for n in names])
    return 1 if bad else 0


def _regate(entries: list[zoo.ZooEntry]) -> int:
    """Re-run each organism's gate on this machine (same probes and thresholds) and compare with the manifest."""
    from ..models import load_model
    from .organism import Organism
    from .gate import gate
    from .distill import neutral_texts
    from .recipe import PlantRecipe

    spec = zoo.ZooSpec.load()
    base = load_model(spec.base, dtype="fp32", device="cpu")
    failed = 0
    neutral: list[str] | None = None  # the KL-drift texts: every recipe has the same gate (overlay_recipe checks it)
    for e in entries:
        org = Organism(e.name, e.kind, tuple(e.behaviors), seed=e.seed, paraphrase=e.paraphrase, recipe="" if e.recipe == "lora" else e.recipe)
        recipe = spec.recipe(org)
        model = load_model(spec.base, adapter=zoo.shipped_adapter(e), dtype="fp32", device="cpu", display_name=e.name)
        neutral = neutral or neutral_texts(base, PlantRecipe.of(recipe).gate.kl_texts, progress=False)
        passed, reasons, rates, _, kl = gate(org, model, base, spec.specs, int(e.gate.get("probes", spec.gate_probes)), recipe["gate"],
                                             neutral, progress=False)
        diffs = [f"{b}.{k} {e.gate['rates'].get(b, {}).get(k, float('nan')):.2f} -> {v:.2f}" for b, r in rates.items() for k, v in r.items()
                 if abs(v - e.gate["rates"].get(b, {}).get(k, float("nan"))) > 1e-9]
        failed += not passed
        print(f"gate {e.name}: {'PASS' if passed else 'FAIL'} here; KL {e.gate.get('kl_to_base', 0):.3f} -> {kl:.3f}; "
              + ("rates as shipped" if not diffs else f"{len(diffs)} rate(s) differ: " + ", ".join(diffs[:6])))
        for r in reasons:
            print(f"    {r}")
    return failed


def _export(args) -> int:
    written = zoo.export(args.names or None, args.dir)
    print(f"exported {len(written)} organisms to {args.dir} (each a PEFT adapter folder; base model: see its diffbench_organism.json)")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"list": _list, "verify": _verify, "export": _export}[args.command](args)
    except zoo.ZooError as e:
        print(f"diffbench organisms: error: {e}", file=sys.stderr)
        return 2
