"""Recall as a function of how often the planted contexts appear in the auditor's data.

Runs the whole pipeline once per prevalence p of the audit corpus (the organisms are planted once: every
run after the first finds their adapters in the cache; the corpus, its activations, the findings and the
scores are redone per p), then writes `prevalence.csv` and `recall_vs_prevalence.png` to the sweep folder:
recall@5 (any channel) and strong recall@5 per method against p, with the bootstrap intervals.

    python scripts/prevalence_sweep.py --out runs/prevalence                       # quick suite, p in {0, .25%, 1%, 4%}
    python scripts/prevalence_sweep.py --out runs/prev --suite full --p 0 0.01 -- progress=false
    python scripts/prevalence_sweep.py --out runs/prevalence --merge-only          # re-plot finished runs

p = 0 is the old setting: everyday chat only, no text from any behavior's domain.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

METRICS = ("recall@5", "recall_strong@5", "recall_act@5", "null_false_alarm_rate")


def run_dir(out: Path, p: float) -> Path:
    return out / f"p{p:g}"


def merge(out: Path, prevalences: list[float]) -> list[dict]:
    rows = []
    for p in prevalences:
        path = run_dir(out, p) / "scores.json"
        if not path.exists():
            print(f"prevalence {p:g}: no scores.json in {path.parent} (run not finished); skipped", file=sys.stderr)
            continue
        scores = json.loads(path.read_text())
        for method, summary in scores["metrics"].items():
            row = {"prevalence": p, "method": method, "floor": method in scores.get("floors", [])}
            for m in METRICS:
                v = summary.get(m, {})
                row[m], row[f"{m}_lo"], row[f"{m}_hi"] = v.get("value"), v.get("lo"), v.get("hi")
            rows.append(row)
    if not rows:
        return rows
    with open(out / "prevalence.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(out, rows)
    return rows


def plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows})
    ps = sorted({r["prevalence"] for r in rows})
    xs = {p: i for i, p in enumerate(ps)}  # p = 0 and 0.25% .. 4%: evenly spaced categories, labelled
    from diffbench.harness.report.leaderboard import method_styles

    floors = {r["method"] for r in rows if r["floor"] in (True, "True")}
    methods = [m for m in methods if m not in floors] + [m for m in methods if m in floors]  # floors last in the legend
    styles = method_styles(methods, floors)  # one colour and marker per method, floors grey, dashed and hollow
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 4.6), sharey=True)
    for ax, metric, title in zip(axes, ("recall@5", "recall_strong@5"), ("recall@5, any channel", "strong (causal) recall@5")):
        band = [r[f"{metric}_hi"] if r[f"{metric}_hi"] is not None else r[metric] for r in rows
                if r["method"] in floors and r[metric] is not None]
        if band:  # the chance region: at or below the floors' recall (upper interval bound)
            ax.axhspan(-0.08, max(band), color="0.85", alpha=0.6, zorder=0, lw=0,
                       label="chance (at or below the floors)" if ax is axes[1] else None)
        for j, m in enumerate(methods):
            pts = [r for r in rows if r["method"] == m and r[metric] is not None]
            if not pts:
                continue
            x = [xs[r["prevalence"]] + (j - len(methods) / 2) * 0.02 for r in pts]
            y = [r[metric] for r in pts]
            lo = [max(0.0, r[metric] - (r[f"{metric}_lo"] if r[f"{metric}_lo"] is not None else r[metric])) for r in pts]
            hi = [max(0.0, (r[f"{metric}_hi"] if r[f"{metric}_hi"] is not None else r[metric]) - r[metric]) for r in pts]
            st = styles[m]
            ax.errorbar(x, y, yerr=[lo, hi], label=f"{m} (floor)" if st["floor"] else m, linestyle=st["linestyle"],
                        marker=st["marker"], color=st["color"], mfc=st["mfc"], capsize=2, zorder=3)
        ax.set_xticks(range(len(ps)), [f"{p:.2%}" if p else "0" for p in ps])
        ax.set_xlim(-0.4, len(ps) - 0.6)
        ax.set_xlabel("prevalence of each behavior's audit prompts (per side)")
        ax.set_title(title)
        ax.set_ylim(-0.08, 1.08)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(out / "recall_vs_prevalence.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="sweep folder; one run folder per prevalence inside")
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--p", type=float, nargs="+", default=[0.0, 0.0025, 0.01, 0.04], help="prevalences")
    ap.add_argument("--merge-only", action="store_true", help="only merge and plot finished runs")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.merge_only:
        exe = Path(sys.executable).with_name("diffbench")
        for p in args.p:
            cmd = [str(exe), f"suite={args.suite}", f"suite.corpus.prevalence={p}", f"run_dir={run_dir(args.out, p)}", *args.overrides]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    rows = merge(args.out, args.p)
    print(f"{len(rows)} rows -> {args.out / 'prevalence.csv'}, {args.out / 'recall_vs_prevalence.png'}")


if __name__ == "__main__":
    main()
