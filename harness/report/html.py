"""The HTML report: one self-contained folder (no network, no scripts, no external fonts) to browse a run.

    html/index.html                     overview: leaderboard (or the diff's methods), plots, plant cards, links
    html/<method>--<pair>.html          one page per method and pair: its top findings with their evidence

A finding's evidence is what its saved record carries (harness/report/snippets.py, harness/difftool/evidence.py): which model
it belongs to, its tokens, its top-activating corpus snippets with per-token scores, the calibrated flag and,
for `diffbench diff`, greedy continuations with its direction added. Benchmark runs add the finding's hits
(matches.csv). Markdown (leaderboard.md) stays the format for papers; this is for reading findings.
Templates: harness/report/templates/*.html (Jinja2, autoescaped).
"""

from __future__ import annotations

import csv
import math
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...core.io import atomic_write, read_json, safe_name
from ..score.flags import FILE as FLAGS_FILE, Calibration
from .leaderboard import _nan
from ..score.status import read_status

TOP = 20  # findings shown per page
SIDE_LABEL = {"a": "model A", "b": "model B", "both": "both models"}


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("diffbench.harness.report", "templates"), autoescape=select_autoescape(["html"]))


def render(template: str, **ctx: Any) -> str:
    return _env().get_template(template).render(**ctx)


def cell(text: Any, href: str | None = None) -> dict:
    return {"text": "" if text is None else str(text), "href": href}


def table(id: str, title: str, headers: list[str], rows: list[list[dict]], caption: str = "", classes: list[str] | None = None) -> dict:
    return {"id": id, "title": title, "headers": headers, "caption": caption,
            "rows": [{"cells": r, "cls": (classes or [""] * len(rows))[i]} for i, r in enumerate(rows)]}


def page_name(method: str, pair: str) -> str:
    return f"{safe_name(method, 80)}--{safe_name(pair, 120)}.html"


def _num(x: Any, digits: int = 4) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if math.isnan(v) else f"{v:.{digits}g}"


def snippet_view(s: dict) -> dict:
    """A saved snippet ({"tokens", "scores", "focus"}) as tokens with a highlight strength in [0, 1]."""
    scores = [_nan(x) for x in s.get("scores", [])]
    top = max((abs(x) for x in scores if math.isfinite(x)), default=0.0) or 1.0
    toks = []
    for i, t in enumerate(s.get("tokens", [])):
        sc = scores[i] if i < len(scores) else float("nan")
        alpha = max(0.0, sc) / top if math.isfinite(sc) else 0.0
        toks.append({"text": t, "alpha": f"{0.75 * alpha:.2f}", "score": _num(sc), "focus": i == s.get("focus")})
    return {"tokens": toks}


def finding_view(rank: int, rec: dict, *, hits: list[str] = (), calibrated: bool | None = None, calibration_note: str = "",
                 steering: dict | None = None) -> dict:
    """One finding's record (findings/*.json) as the findings page shows it."""
    info = rec.get("info") or {}
    details = [(k, _num(v)) for k, v in info.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k != "excerpt"]
    if isinstance(info.get("excerpt"), str):
        details.append(("excerpt", info["excerpt"]))
    return {"rank": rank + 1, "id": rec["id"], "side": rec.get("side", "b"), "side_label": SIDE_LABEL.get(rec.get("side"), rec.get("side")),
            "uniqueness": _num(rec["uniqueness"]), "flagged": bool(rec.get("flagged")), "calibrated": calibrated,
            "calibration_note": calibration_note, "tokens": [t for t in rec.get("tokens", [])[:12]], "hits": list(hits),
            "details": details[:12], "snippets": [snippet_view(s) for s in info.get("snippets") or []], "steering": steering}


def write_site(out: Path, index: dict, pages: dict[str, dict], assets: list[Path] = ()) -> Path:
    """index.html from `index`, findings pages from `pages` (file name -> template context), assets copied beside."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for a in assets:
        if Path(a).exists():
            shutil.copyfile(a, out / Path(a).name)
    for name, ctx in pages.items():
        atomic_write(out / name, render("findings.html", **ctx))
    atomic_write(out / "index.html", render("index.html", **index))
    return out / "index.html"


# ----------------------------------------------------------------------------- benchmark runs


def _hits(run_dir: Path) -> dict[tuple[str, str, str, str], list[str]]:
    """(method, seed, pair, finding) -> the hits it scored ("<behavior>: activation / token / strong")."""
    out: dict[tuple[str, str, str, str], list[str]] = {}
    path = run_dir / "matches.csv"
    if not path.exists():
        return out
    with open(path) as f:
        for r in csv.DictReader(f):
            chans = [c for c, col in (("activation", "act_match"), ("token", "token_match"), ("strong", "strong_match")) if r.get(col) == "True"]
            if chans:
                out.setdefault((r["method"], r["seed"], r["pair"], r["finding"]), []).append(f"{r['behavior']}: {' + '.join(chans)}")
    return out


def write_run_html(run_dir: Path) -> Path:
    """The HTML report of a benchmark run folder (after the score stage): run_dir/html/."""
    from ..score.metrics import columns as metric_columns
    from .leaderboard import columns, floor_check, fmt, header, _val
    from ..score.scoring import ScoringConfig

    run_dir = Path(run_dir)
    scores = read_json(run_dir / "scores.json")
    metrics = scores["metrics"]
    floors = set(scores.get("floors") or [])
    lead, channels, rest = columns(scores.get("scoring") or {})
    order = sorted(metrics, key=lambda m: (m in floors, -_val(metrics[m].get(lead[0][0]))))
    head = header(run_dir, scores)
    meta = [(l[2:].split(":", 1)[0], l[2:].split(":", 1)[1].strip().replace("`", "")) for l in head if l.startswith("- ")]
    scfg = ScoringConfig.from_dict(scores.get("scoring") or {})
    plain = lambda text: text.replace("*", "").replace("`", "")  # Markdown emphasis and code marks, dropped in HTML
    lead_caption = plain(" ".join([head[-1], *floor_check(metrics, floors, scfg.K)[0]]))
    tables = []
    for tid, title, cols in (("leaderboard", "Leaderboard", lead), ("channels", "By channel", channels), ("more", "More metrics", rest)):
        if not metrics:  # a suite of cross-architecture pairs only: its table is below
            break
        rows = [[cell(f"{m} (floor)" if m in floors else m), *(cell(fmt(metrics[m].get(k))) for k, _ in cols),
                 cell(", ".join(f"{k} {v}" for k, v in metrics[m]["_status"].items()))] for m in order]
        tables.append(table(tid, title, ["method", *(h for _, h in cols), "runs"], rows,
                            lead_caption if tid == "leaderboard" else "", ["floor" if m in floors else "" for m in order]))
    cross = scores.get("metrics_crossarch") or {}
    if cross:  # cross-architecture pairs are scored apart, with their own columns (harness/report/leaderboard.py's cross section)
        ccols = metric_columns(scfg, "cross")
        corder = sorted(cross, key=lambda m: (m in floors, -_val(cross[m].get(f"recall@{scfg.K}"))))
        rows = [[cell(f"{m} (floor)" if m in floors else m), *(cell(fmt(cross[m].get(k))) for k, _ in ccols),
                 cell(", ".join(f"{k} {v}" for k, v in cross[m]["_status"].items()))] for m in corder]
        check, _ = floor_check(cross, floors & set(cross), scfg.K)
        tables.append(table("crossarch", "Cross-architecture pairs", ["method", *(h for _, h in ccols), "runs"], rows,
                            plain(" ".join(check)), ["floor" if m in floors else "" for m in corder]))
    cards = scores.get("plant_cards") or {}
    if cards:
        rows = [[cell(n), cell("pass" if c["passed"] else "FAIL"), cell(b), cell(_num(r["organism_T"], 2)), cell(_num(r.get("organism_C"), 2)),
                 cell(_num(r.get("base_T"), 2)), cell(_num(c["kl_to_base"], 3))]
                for n, c in cards.items() for b, r in c["rates"].items() if c["kind"] == "behavior" or r["organism_T"] > 0]
        tables.append(table("cards", "Plant cards", ["organism", "gate", "behavior", "T (organism)", "C (organism)", "T (base)", "KL to base"], rows))
    calib = Calibration.load(run_dir / FLAGS_FILE) if (run_dir / FLAGS_FILE).exists() else None
    hits = _hits(run_dir)
    pages, links = {}, []
    seeds = scores.get("seeds") or {}
    for method in dict.fromkeys([*order, *cross]):
        seed = (seeds.get(method) or [0])[0]  # one seed per method (floors run 20)
        cfg_hash = ""
        for p in scores["pairs"]:
            stem = run_dir / "findings" / method / f"{p['id']}@s{seed}"
            path, status = stem.with_suffix(".json"), read_status(stem.with_suffix(".status.json"), missing_ok=True)
            if not path.exists():
                links.append([cell(method), cell(p["id"]), cell(p["kind"]), cell(status.get("status", "no findings")), cell(""), cell(status.get("error", ""))])
                continue
            cfg_hash = status.get("config_hash", "")
            recs = read_json(path)["findings"][:TOP]
            views = []
            for i, rec in enumerate(recs):
                flag, note = calib.flag(method, cfg_hash, rec["uniqueness"]) if calib else (None, "this run has no flag thresholds")
                views.append(finding_view(i, rec, hits=hits.get((method, str(seed), p["id"], rec["id"]), []), calibrated=flag, calibration_note=note))
            name = page_name(method, p["id"])
            pages[name] = {"title": f"{method} on {p['id']}", "meta": [("pair", f"{p['id']} ({p['kind']}: {p['a']} vs {p['b']})"),
                                                                      ("planted", ", ".join(p.get("behaviors") or []) or "nothing"),
                                                                      ("seed", seed), ("findings", f"top {len(recs)} shown")],
                           "notes": [], "findings": views}
            links.append([cell(method), cell(p["id"], name), cell(p["kind"]), cell("ok"), cell(sum(1 for v in views if v["hits"])), cell("")])
    tables.append(table("pages", "Findings per method and pair", ["method", "pair", "kind", "status", "findings with a hit (top 20)", "note"], links))
    plots = [{"src": n, "alt": n} for n in ("recall_vs_false_alarms.png", "hit_matrix.png", "recall_vs_prevalence.png") if (run_dir / n).exists()]
    index = {"title": head[0].lstrip("# ").replace("`", ""), "meta": meta, "notes": [], "tables": tables, "plots": plots}
    return write_site(run_dir / "html", index, pages, [run_dir / p["src"] for p in plots])


# ----------------------------------------------------------------------------- diffbench diff


def write_diff_html(out: Path, summary: dict, runs: list, evidence: dict[str, dict[str, dict]]) -> Path:
    """The HTML report of `diffbench diff`: out/html/ (runs: difftool.MethodRun, with their findings)."""
    src = summary.get("sources") or [summary["model_a"], summary["model_b"]]
    named = lambda n, s: n if n == s else f"{n} ({s})"
    meta = [("model A", named(summary["model_a"], src[0])), ("model B", named(summary["model_b"], src[1])), ("corpus", f"{summary['corpus']}, {summary['documents']} documents"),
            ("layers (A, B)", summary["layers"]), ("calibration", summary["calibration"] or "none"),
            ("time", f"{summary['seconds']:.0f} s")]
    notes = ["A finding 'clears the null threshold' when its uniqueness is above the value that admits 5% of the method's "
             "findings on null pairs (fine-tunes with nothing planted) in the reference run; the method's own flag is its "
             "published rule, which on the benchmark fires on many null pairs. Nothing here is ground truth: read the "
             "snippets and the steered continuations."]
    if summary.get("cross_pair") and summary["calibration"]:
        notes.append("The two models differ in architecture or tokenizer, while the thresholds come from null pairs of one "
                     "model and its fine-tunes: read the calibrated flags as indicative.")
    rows, pages = [], {}
    for r in runs:
        name = page_name(r.key, "diff")
        has_page = r.status == "ok"
        rows.append([cell(r.key, name if has_page else None), cell(r.status), cell(r.n_findings), cell(r.n_flagged),
                     cell(r.n_calibrated if not r.calibration else "n/a"), cell(f"{r.seconds:.1f}"), cell(r.error or r.calibration)])
        if not has_page:
            continue
        views = []
        for i, f in enumerate(r.findings):
            rec = _record(f)
            flag = {"yes": True, "no": False}.get(f.info.get("calibrated_flag"))
            views.append(finding_view(i, rec, calibrated=flag, calibration_note=f.info.get("calibration", ""),
                                      steering=evidence.get(r.key, {}).get(f.id)))
        pages[name] = {"title": f"{r.key}: {summary['model_a']} vs {summary['model_b']}", "meta": [("method", r.name), *meta[:2]],
                       "notes": [], "findings": views}
    tables = [table("methods", "Methods", ["method", "status", "findings", "flagged (method's rule)", "clear the null threshold",
                                           "seconds", "note"], rows)]
    index = {"title": f"diffbench diff: {summary['model_a']} vs {summary['model_b']}", "meta": meta, "notes": notes, "tables": tables, "plots": []}
    return write_site(Path(out) / "html", index, pages)


def _record(f) -> dict:
    return {"id": f.id, "uniqueness": float(f.uniqueness), "flagged": bool(f.flagged), "side": f.side, "tokens": list(f.tokens),
            "info": {k: v for k, v in f.info.items() if k not in ("calibrated_flag", "calibration")}}
