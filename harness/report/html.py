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
from .leaderboard import _nan, public_command
from ..score.status import read_status

TOP = 20  # findings shown per page
SIDE_LABEL = {"a": "model A", "b": "model B", "both": "both models"}
SIDE_HELP = {"a": "the difference belongs to model A (it shows there, or A scores the text higher)",
             "b": "the difference belongs to model B (it shows there, or B scores the text higher)",
             "both": "the finding reads both models"}
FLAG_HELP = ("Method's own flag: the method's published rule for calling a finding real. Calibrated flag: whether its "
             "uniqueness clears the value that admits 5% of the method's findings on null pairs of the reference run. "
             "Both are guesses made without ground truth; a hit is scored against the planted behavior, so a hit with a "
             "flag 'no' is a difference the method found but did not claim.")

# Every column and badge of the report, in the words of docs/protocol.md's glossary. Keys: a column's label with its
# numbers as k and without its arrow (R@5 ↑ -> R@k), or a badge's name. tests/test_html_report.py checks that every
# column of every table has an entry.
GLOSSARY = {
    "method": "The diffing method; rows marked (floor) are floors: methods that find nothing by construction "
              "(random_directions, random_dictionary, 20 seeds each) and so measure chance.",
    "R@k": "Recall@k: share of units (planted pair, behavior) hit by one of the method's top-k findings, any channel.",
    "act R@k": "Recall@k counting only activation hits (the finding's readout separates trigger from control prompts "
               "better than random readouts of its own kind).",
    "token R@k": "Recall@k counting only token hits (a behavior keyword among the finding's top tokens, rarer than chance).",
    "strong R@k": "Recall@k counting only strong (causal) hits: adding the direction to A makes the behavior appear, or "
                  "removing it from B makes it disappear, more than random directions do, without changing control prompts.",
    "act or token R@k": "Recall@k from activation or token hits only.",
    "P@k": "Precision@k: share of the top-k findings that hit a planted behavior.",
    "excl. R@k": "Exclusive recall (cross-architecture pairs): recall from findings that attribute the difference to the "
                 "right model.",
    "FDR(flagged)": "Share of the findings a method flags on planted pairs that hit no planted behavior.",
    "flags/planted pair": "Flagged findings per planted pair.",
    "null flags/pair": "Flagged findings per null pair (nothing planted: every flag is a false alarm).",
    "background flags": "Flagged findings per cross-architecture background pair.",
    "null FA rate": "Null false-alarm rate: share of null pairs on which the method flags anything.",
    "R@nullk%": "Recall when the uniqueness threshold admits k% of the method's findings on null pairs.",
    "R@bgk%": "As R@null, with the threshold set on cross-architecture background pairs.",
    "oversens.": "Oversensitivity index: flags per null pair divided by flags per planted pair.",
    "analog FP flagged": "Flagged findings per analog pair that hit the shared behavior (both models have it).",
    "analog FP@k": "Share of analog pairs (both models carry the behavior) with a hit among the top k findings: a false positive.",
    "org. AUROC": "Organism AUROC: how well the method's top uniqueness per pair separates planted from null pairs (0.5 = chance).",
    "seed agree.": "For a stochastic method, how often its seeds agree on which behaviors they hit.",
    "seeds": "Seeds the method ran with (floors: 20).",
    "runs": "The method's runs by status (ok, not applicable, failed).",
    "[lo, hi], ±, n/a": "[lo, hi]: bootstrap 95% interval over organisms; ±: spread (std) over a stochastic method's seeds; "
                        "n/a: undefined (e.g. nothing flagged). ↑: higher is better, ↓: lower is better.",
    "beats the floors": "A marked cell beats every floor: above the highest floor's upper interval bound (↑), or below the "
                        "lowest floor's lower bound (↓).",
    "model A / model B / both models": "The side: which model the finding's difference belongs to.",
    "uniqueness": "The method's own score for how specific to one model a finding is; findings are ranked by it.",
    "method's own flag": "The method's published decision rule that a finding is a real difference.",
    "calibrated flag": "Whether the finding's uniqueness clears the null threshold: the value that admits 5% of that "
                       "method's findings on the reference run's null pairs; 'uncalibrated' where no threshold applies.",
    "hit (activation / token / strong)": "The finding hits a planted behavior on that channel (benchmark runs only).",
    "activation AUROC, p": "How well the finding's per-prompt max readout separates the behavior's trigger from control "
                           "prompts, and its p-value against random readouts of the finding's own kind.",
    "token p": "The chance that random directions put a behavior keyword as high among their top tokens.",
    "steer / ablate / control change": "Strong channel: how much adding the direction to A (steer) or removing it from B "
                                       "(ablate) changes the behavior's rate on trigger prompts, and the share of control "
                                       "prompts whose answers the ablation changed.",
}


def glossary_key(label: str) -> str:
    """A column label as GLOSSARY keys it: without its arrow, numbers as k (R@5 ↑ -> R@k, R@null5% -> R@nullk%)."""
    import re

    return re.sub(r"\d+", "k", label.replace("↑", "").replace("↓", "").strip())


def glossary(headers: list[str]) -> list[tuple[str, str]]:
    """(term, definition) for each distinct column of `headers`, then the notation and every badge."""
    keys = list(dict.fromkeys(glossary_key(h) for h in headers))
    badges = ["[lo, hi], ±, n/a", "beats the floors", "model A / model B / both models", "uniqueness", "method's own flag",
              "calibrated flag", "hit (activation / token / strong)", "activation AUROC, p", "token p", "steer / ablate / control change"]
    return [(k, GLOSSARY[k]) for k in dict.fromkeys([*keys, *badges]) if k in GLOSSARY]


def public(text: Any) -> str:
    """Text for a page: every absolute path of the machine that made it cut to its last part."""
    import re

    return re.sub("…+/", "…/", public_command("" if text is None else str(text)))  # a path cut once stays as it was


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("diffbench.harness.report", "templates"), autoescape=select_autoescape(["html"]))


def render(template: str, **ctx: Any) -> str:
    return _env().get_template(template).render(**ctx)


def cell(text: Any, href: str | None = None, cls: str = "") -> dict:
    return {"text": public(text), "href": href, "cls": cls}


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


def shown_token(t: str) -> str:
    """A token on one line: newlines and tabs escaped."""
    return t.replace("\n", "\\n").replace("\t", "\\t")


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


EVIDENCE_HEADERS = ["behavior", "activation AUROC", "activation p", "token p", "steer change", "ablate change",
                    "control change", "hit"]


def channels(match: dict) -> list[str]:
    """The channels on which a matches.csv row hits (activation, token, strong)."""
    return [c for c, col in (("activation", "act_match"), ("token", "token_match"), ("strong", "strong_match")) if match.get(col) == "True"]


def evidence_rows(matches: list[dict]) -> list[list[str]]:
    """A finding's rows of matches.csv (one per behavior of its pair) as its evidence table: per channel the figures
    behind a hit (activation AUROC and p, token p, the causal steer/ablate change with the control prompts' change)."""
    rows = []
    for m in matches:
        strong = m.get("strong_tested") == "True"
        chans = channels(m)
        rows.append([m["behavior"], _num(m.get("auroc"), 3), _num(m.get("act_p"), 2), _num(m.get("token_p"), 2),
                     _num(m.get("strong_steer"), 3) if strong else "not tested", _num(m.get("strong_ablate"), 3) if strong else "not tested",
                     _num(m.get("strong_collateral"), 2) if strong else "not tested", " + ".join(chans) or "no"])
    return rows


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool) and v != ""


def finding_view(rank: int, rec: dict, *, hits: list[str] = (), calibrated: bool | None = None, calibration_note: str = "",
                 steering: dict | None = None, evidence: list[list[str]] = (), skip: set[str] = frozenset()) -> dict:
    """One finding's record (findings/*.json) as the findings page shows it; `skip`: info keys the page shows once
    (training diagnostics shared by every finding of the run)."""
    info = rec.get("info") or {}
    text = info.get("excerpt") if isinstance(info.get("excerpt"), str) else None  # a text finding (logprob_diff's)
    details = [(k, public(_num(v))) for k, v in info.items() if _scalar(v) and k not in skip and k != "excerpt"]
    side = rec.get("side", "b")
    return {"rank": rank + 1, "id": rec["id"], "side": side, "side_label": SIDE_LABEL.get(side, side), "side_help": SIDE_HELP.get(side, ""),
            "uniqueness": _num(rec["uniqueness"]), "flagged": bool(rec.get("flagged")), "calibrated": calibrated,
            "calibration_note": public(calibration_note), "tokens": [shown_token(t) for t in rec.get("tokens", [])[:12]], "hits": list(hits),
            "text": text, "tokens_label": ("tokens with the largest log-probability gain toward its side" if text is not None
                                           else "logit-lens tokens (what its direction promotes through the unembedding)"),
            "details": details[:12], "snippets": [snippet_view(s) for s in info.get("snippets") or []], "steering": steering,
            "evidence": list(evidence), "evidence_headers": EVIDENCE_HEADERS}


def shared_info(recs: list[dict]) -> list[tuple[str, str]]:
    """Info values every finding of a page shares (a trained dictionary's diagnostics: EV, L0, dead fraction...): shown
    once per page instead of under every finding."""
    if len(recs) < 2:
        return []
    infos = [r.get("info") or {} for r in recs]
    return [(k, public(_num(v))) for k, v in infos[0].items()
            if _scalar(v) and k != "excerpt" and all(k in i and i[k] == v for i in infos[1:])]


def findings_page(title: str, meta: list, recs: list[dict], view) -> dict:
    """A findings page's context: `view(i, rec, skip)` makes each card; diagnostics shared by all cards go on top."""
    common = shared_info(recs)
    skip = {k for k, _ in common}
    return {"title": title, "meta": [(k, public(v)) for k, v in meta], "notes": [FLAG_HELP], "diagnostics": common,
            "findings": [view(i, rec, skip) for i, rec in enumerate(recs)]}


def write_site(out: Path, index: dict, pages: dict[str, dict], assets: list[Path] = (), template: str = "index.html") -> Path:
    """index.html from `index` (rendered by `template`), findings pages from `pages` (file name -> template context),
    assets copied beside."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for a in assets:
        if Path(a).exists():
            shutil.copyfile(a, out / Path(a).name)
    for name, ctx in pages.items():
        atomic_write(out / name, render("findings.html", **ctx))
    index = {**index, "meta": [(k, public(v)) for k, v in index["meta"]], "notes": [public(n) for n in index["notes"]]}
    atomic_write(out / "index.html", render(template, **index))
    return out / "index.html"


# ----------------------------------------------------------------------------- benchmark runs


def _matches(run_dir: Path) -> dict[tuple[str, str, str, str], list[dict]]:
    """(method, seed, pair, finding) -> its rows of matches.csv (one per behavior of the pair)."""
    out: dict[tuple[str, str, str, str], list[dict]] = {}
    path = run_dir / "matches.csv"
    if path.exists():
        with open(path) as f:
            for r in csv.DictReader(f):
                out.setdefault((r["method"], r["seed"], r["pair"], r["finding"]), []).append(r)
    return out


def _hits(rows: list[dict]) -> list[str]:
    """The hits a finding scored ("<behavior>: activation + strong"), from its matches.csv rows."""
    out = []
    for r in rows:
        chans = channels(r)
        if chans:
            out.append(f"{r['behavior']}: {' + '.join(chans)}")
    return out


def beats_floors(metrics: dict, floors: set[str], key: str, higher: bool) -> set[str]:
    """Methods whose `key` beats every floor: above the highest floor's upper interval bound (higher is better) or below
    the lowest floor's lower bound. None without a floor value."""
    bounds = [_nan((metrics[f].get(key) or {}).get("hi" if higher else "lo")) for f in floors if f in metrics]
    bounds = [b for b in bounds if math.isfinite(b)]
    if not bounds:
        return set()
    bar = max(bounds) if higher else min(bounds)
    values = {m: _nan((v.get(key) or {}).get("value")) for m, v in metrics.items() if m not in floors}
    return {m for m, x in values.items() if math.isfinite(x) and (x > bar if higher else x < bar)}


def write_run_html(run_dir: Path) -> Path:
    """The HTML report of a benchmark run folder (after the score stage): run_dir/html/."""
    from ..score.metrics import columns as metric_columns
    from .leaderboard import columns, floor_check, fmt, header, _val
    from ..score.config import ScoringConfig

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
        marked = {k: beats_floors(metrics, floors, k, "↓" not in h) for k, h in cols} if tid == "leaderboard" else {}
        rows = [[cell(f"{m} (floor)" if m in floors else m),
                 *(cell(fmt(metrics[m].get(k)), cls="beats" if m in marked.get(k, ()) else "") for k, _ in cols),
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
    matches = _matches(run_dir)
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

            def view(i, rec, skip, method=method, cfg_hash=cfg_hash, key=(method, str(seed), p["id"])):
                flag, note = calib.flag(method, cfg_hash, rec["uniqueness"]) if calib else (None, "this run has no flag thresholds")
                rows = matches.get((*key, rec["id"]), [])
                return finding_view(i, rec, hits=_hits(rows), calibrated=flag, calibration_note=note, evidence=evidence_rows(rows), skip=skip)

            name = page_name(method, p["id"])
            pages[name] = findings_page(f"{method} on {p['id']}", [("pair", f"{p['id']} ({p['kind']}: {p['a']} vs {p['b']})"),
                                                                  ("planted", ", ".join(p.get("behaviors") or []) or "nothing"),
                                                                  ("seed", seed), ("findings", f"top {len(recs)} shown")], recs, view)
            views = pages[name]["findings"]
            links.append([cell(method), cell(p["id"], name), cell(p["kind"]), cell("ok"), cell(sum(1 for v in views if v["hits"])), cell("")])
    tables.append(table("pages", "Findings per method and pair", ["method", "pair", "kind", "status", "findings with a hit (top 20)", "note"], links))
    plots = [{"src": n, "alt": n} for n in ("recall_vs_false_alarms.png", "hit_matrix.png", "recall_vs_prevalence.png") if (run_dir / n).exists()]
    summary = tables.pop(0) if tables and tables[0]["id"] in ("leaderboard", "crossarch") else None
    if summary:
        summary["caption"] = ("Marked cells beat every floor (glossary below). " + summary["caption"]).strip()
    headers = [h for t in ([summary] if summary else []) + tables if t["id"] in ("leaderboard", "channels", "more", "crossarch") for h in t["headers"]]
    index = {"title": head[0].lstrip("# ").replace("`", ""), "meta": meta, "notes": [], "summary": summary, "tables": tables,
             "plots": plots, "glossary": glossary(headers)}
    return write_site(run_dir / "html", index, pages, [run_dir / p["src"] for p in plots])


# ----------------------------------------------------------------------------- diffbench diff


def write_diff_html(out: Path, summary: dict, runs: list, evidence: dict[str, dict[str, dict]]) -> Path:
    """The HTML report of `diffbench diff`: out/html/ (runs: difftool.MethodRun, with their findings)."""
    from ..difftool.tool import TOP_RULE, top_findings

    src = summary.get("sources") or [summary["model_a"], summary["model_b"]]
    named = lambda n, s: n if n == s else f"{n} ({public(s)})"
    meta = [("model A", named(summary["model_a"], src[0])), ("model B", named(summary["model_b"], src[1])), ("corpus", f"{summary['corpus']}, {summary['documents']} documents"),
            ("layers (A, B)", summary["layers"]), ("calibration", summary["calibration"] or "none"),
            ("time", f"{summary['seconds']:.0f} s")]
    notes = ["Nothing here is ground truth: read the snippets and the steered continuations. " + FLAG_HELP]
    if summary.get("cross_pair"):
        notes.append("The two models differ in architecture or tokenizer: the defaults are the methods that apply to such "
                     "pairs, and calibrated flags are not applied (the thresholds come from same-architecture null pairs).")
    side = {"a": f"model A ({summary['model_a']})", "b": f"model B ({summary['model_b']})", "both": "both models"}
    top_rows = [[cell(n), cell(f"{t['method']} #{t['rank']}", f"{page_name(t['method'], 'diff')}#f{t['rank']}"), cell(side.get(t["side"], t["side"])),
                 cell(f"text: {t['text'][:160]}" if t["text"] else " ".join(repr(x) for x in t["tokens"])), cell(_num(t["uniqueness"])),
                 cell("yes" if t["flagged"] else "no"), cell(t["calibrated"] if t["calibrated"] != "n/a" else "uncalibrated"),
                 cell(t["effect"] or "not steered")] for n, t in enumerate(top_findings(runs, evidence), 1)]
    top = table("top", "Top findings across methods", ["#", "method (rank)", "side", "tokens or text", "uniqueness", "method's own flag",
                                                        "calibrated flag", "steering"], top_rows, TOP_RULE[0].upper() + TOP_RULE[1:] + ".")
    rows, pages = [], {}
    for r in runs:
        name = page_name(r.key, "diff")
        has_page = r.status == "ok"
        rows.append([cell(r.key, name if has_page else None), cell(r.status), cell(r.n_findings), cell(r.n_flagged),
                     cell(r.n_calibrated if not r.calibration else "n/a"), cell(f"{r.seconds:.1f}"), cell(r.error or r.calibration)])
        if not has_page:
            continue

        def view(i, rec, skip, r=r):
            f = r.findings[i]
            flag = {"yes": True, "no": False}.get(f.info.get("calibrated_flag"))
            return finding_view(i, rec, calibrated=flag, calibration_note=f.info.get("calibration", ""),
                                steering=evidence.get(r.key, {}).get(f.id), skip=skip)

        pages[name] = findings_page(f"{r.key}: {summary['model_a']} vs {summary['model_b']}", [("method", r.name), *meta[:2]],
                                    [_record(f) for f in r.findings], view)
    tables = [table("methods", "Methods", ["method", "status", "findings", "flagged (method's own rule)", "clear the null threshold",
                                           "seconds", "note"], rows)]
    index = {"title": f"diffbench diff: {summary['model_a']} vs {summary['model_b']}", "meta": meta, "notes": notes, "summary": top,
             "tables": tables, "plots": [], "glossary": glossary([])}
    return write_site(Path(out) / "html", index, pages)


NWAY_LEGEND = ("One row per finding (each method's top {top}, grouped by method), one column per member. A mark (●) "
               "in a member's column: the method attributes the difference to that member. The marked members are the "
               "finding's subset: what they have and the other members lack, as the method reads it (a feature in "
               "one member's stream, or in two members' shared section of the N-way crosscoder; all_pairs: the models "
               "on whose side a two-model method found it, over every ordered pair). Nothing here is ground truth: "
               "read the tokens and the snippets; the rank links to the finding's card.")
NWAY_GLOSSARY = {
    "subset": "The members a finding is attributed to (its marked cells): the difference is in their models and not "
              "in the others', as the method reads it.",
    "reads": "The two members whose activations the finding's readout reads (its snippets come from them); the same "
             "member twice: that member against the common base where there is one.",
}


def write_nway_html(out: Path, summary: dict, runs: list) -> Path:
    """The HTML report of `diffbench diff models=[...]`: out/html/. The index's centre is a matrix of findings x members
    (harness/report/templates/nway.html); each method with findings has a page of finding cards, as the two-model
    report's (runs: difftool.MethodRun, their findings GroupFindings)."""
    from ..difftool.nway import UNCALIBRATED, subset_label

    names = list(summary["models"])
    label = lambda models: subset_label(models, names)
    meta = [("members", len(names)), ("common base", summary["base"] or "none (per-member methods do not apply)"),
            ("corpus", f"{summary['corpus']}, {summary['documents']} documents"), ("layers", summary["layers"]),
            ("calibration", UNCALIBRATED), ("time", f"{summary['seconds']:.0f} s")]
    notes = ["Nothing here is ground truth: read the tokens and snippets. Method's own flag: the method's published "
             "rule for calling a finding real; there are no calibrated flags for N-way methods yet."]
    methods, rows, pages = [], [], {}
    for r in runs:
        name = page_name(r.key, "nway")
        ok = r.status == "ok"
        rows.append([cell(r.key, name if ok else None), cell(r.status), cell(r.n_findings), cell(r.n_flagged),
                     cell(f"{r.seconds:.1f}"), cell(r.error)])
        if not ok:
            continue
        shown = r.findings[:TOP]
        methods.append({"key": r.key, "name": r.name, "page": name, "rows": [
            {"rank": i + 1, "id": f.id, "href": f"{name}#f{i + 1}", "marks": [m in f.models for m in range(len(names))],
             "subset": label(f.models), "uniqueness": _num(f.uniqueness), "flagged": bool(f.flagged),
             "tokens": [shown_token(t) for t in f.tokens[:6]],
             "snippet": snippet_view(f.info["snippets"][0]) if f.info.get("snippets") else None} for i, f in enumerate(shown)]})

        def view(i, rec, skip, r=r):
            f = r.findings[i]
            v = finding_view(i, rec, calibrated=None, calibration_note=f.info.get("calibration", ""), skip=skip)
            reads = " and ".join(f"{m} ({names[m]})" for m in dict.fromkeys(f.reads))
            v.update(side="both", side_word="subset", side_label=label(f.models),
                     side_help=f"the members the method attributes the difference to; its readout reads {reads}")
            return v

        pages[name] = findings_page(f"{r.key} on {len(names)} models", [("method", r.name), *meta[:2]],
                                    [_record(f) for f in shown], view)
        pages[name]["notes"] = notes
    members = table("members", "Members", ["#", "model", "source", "kind"],
                    [[cell(m["index"]), cell(m["name"]), cell(m["source"]),
                      cell("adapter" if m["adapter"] else "checkpoint")] for m in summary["members"]])
    tables = [members, table("methods", "Methods", ["method", "status", "findings", "flagged (method's own rule)", "seconds", "note"], rows)]
    index = {"title": f"diffbench diff: {len(names)} models", "meta": meta, "notes": notes, "summary": None, "tables": tables,
             "plots": [], "members": names, "matrix": methods, "legend": NWAY_LEGEND.format(top=TOP),
             "glossary": [*NWAY_GLOSSARY.items(), *((k, v) for k, v in glossary([]) if k in ("uniqueness", "method's own flag"))]}
    return write_site(Path(out) / "html", index, pages, template="nway.html")


def _record(f) -> dict:
    return {"id": f.id, "uniqueness": float(f.uniqueness), "flagged": bool(f.flagged), "side": f.side, "tokens": list(f.tokens),
            "info": {k: v for k, v in f.info.items() if k not in ("calibrated_flag", "calibration")}}
