"""The report: leaderboard.md and plots, rebuilt from a run folder's scores and matches."""

from __future__ import annotations

import math
import re
import platform
from pathlib import Path

from ...core.io import atomic_path, atomic_write, read_csv, read_json
from ..score.metrics import columns as metric_columns, null_percent
from ..score.config import ScoringConfig
from ..references import REFERENCES, REPO
from ..score.significance import breakdown_section, significance_section

def columns(scoring: dict) -> tuple[list, list, list]:
    """(lead, channels, rest): the leaderboard's columns for this run's ks and strong-channel k, from the metric
    registry (harness/score/metrics.py). Lead: what separates methods."""
    cfg = ScoringConfig.from_dict(scoring or {})
    return tuple(metric_columns(cfg, table) for table in ("lead", "channel", "rest"))


# Training diagnostics a method may record with `save_run_metrics` (crosscoders, SAEs): held-out explained
# variance per model, L0, dead fraction. Shown as min-max over the method's runs.
# (the score stage copies these keys into runs.csv)
TRAINING_INFO = [("ev_a", "EV model A"), ("ev_b", "EV model B"), ("l0", "L0"), ("dead_frac", "dead fraction")]

def machine_description() -> str:
    """CPU model and core count (and GPU when present), for the reader of a leaderboard."""
    import os

    from ...core.env import cpu_model

    desc = f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            desc += ", no GPU"
    except ImportError:
        pass
    return desc


# The protocol's own test (issue 15): a floor's mean recall over its seeds, any channel, at k = 1 and at the largest k.
# Above these a chance list hits planted behaviors too often for recall to rank methods.
FLOOR_BOUNDS = {"recall@1": 0.05, "recall@K": 0.10}


def floor_check(metrics: dict, floors: list[str] | set[str], K: int) -> tuple[list[str], bool]:
    """(lines, ok): each floor's recall@1 and recall@K against FLOOR_BOUNDS."""
    parts, ok = [], True
    for f in sorted(floors):
        cells = []
        for k, bound in ((1, FLOOR_BOUNDS["recall@1"]), (K, FLOOR_BOUNDS["recall@K"])):
            m = metrics.get(f, {}).get(f"recall@{k}") or {}
            v = m.get("value")
            within = v is not None and not math.isnan(_nan(v)) and v <= bound
            ok &= within
            cells.append(f"recall@{k} {fmt(m)} (bound {bound:.2f}{'' if within else ': ABOVE'})")
        parts.append(f"`{f}` " + ", ".join(cells))
    if not parts:
        return [], True
    verdict = ("Every floor is within the bounds" if ok else
               "**A floor is above its bound: chance reaches the planted behaviors on this suite, so recall does not rank "
               "methods here (DESIGN.md, Scoring protocol)**")
    return [f"Floor check (mean over seeds, any channel): " + "; ".join(parts) + f". {verdict}."], ok


# The suite whose pooled floors (hundreds of draws) estimate chance best: a shorter run (the quick suite's few floor
# draws) states that estimate beside its own.
FLOOR_REFERENCE = "zoo"


def reference_floor_lines(scores: dict, floors: set[str], K: int) -> list[str]:
    """The floors' estimate on the zoo reference run, beside this run's own (nothing on the zoo run itself, or where
    the reference is not in this checkout)."""
    path = REPO / REFERENCES[FLOOR_REFERENCE] / "scores.json"
    if scores.get("suite") == FLOOR_REFERENCE or not floors or not path.is_file():
        return []
    ref = read_json(path)
    ref_metrics = ref.get("metrics") or {}
    parts = []
    for f in sorted(floors & set(ref_metrics)):
        sm = ref_metrics[f]
        draws = sm.get("_pooled_draws") or len(sm.get("_seeds") or [])
        parts.append(f"`{f}` recall@1 {fmt(sm.get('recall@1'))}, recall@{K} {fmt(sm.get(f'recall@{K}'))} ({draws} draws)")
    if not parts:
        return []
    return ["", f"The floors on the {FLOOR_REFERENCE} reference run ({REFERENCES[FLOOR_REFERENCE]}, pooled over its units; "
                "a tighter estimate of chance than this run's few draws): " + "; ".join(parts) + "."]


def _nan(x) -> float:
    """A number read back from strict JSON, where null stands for NaN (no value)."""
    return float("nan") if x is None else float(x)


def fmt(m: dict | None) -> str:
    if not m or m.get("value") is None or (isinstance(m["value"], float) and math.isnan(m["value"])):
        return "n/a"
    v, lo, hi = m["value"], _nan(m.get("lo")), _nan(m.get("hi"))
    s = f"{v:.2f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo:.2f}, {hi:.2f}]"
    std = _nan(m.get("seed_std"))
    if not math.isnan(std):
        s += f" ±{std:.2f}"
    return s


def write_report(run_dir: Path) -> None:
    run_dir = Path(run_dir)
    scores = read_json(run_dir / "scores.json")
    metrics = scores["metrics"]
    cross = scores.get("metrics_crossarch") or {}
    lines = header(run_dir, scores)
    floors = set(scores.get("floors") or [])
    lead, channels, rest = columns(scores.get("scoring") or {})
    scfg = ScoringConfig.from_dict(scores.get("scoring") or {})
    K = scfg.K
    order = sorted(metrics, key=lambda m: (m in floors, -_val(metrics[m].get(lead[0][0]))))
    label = lambda m: f"{m} (floor)" if m in floors else m
    seeds = scores.get("seeds") or {}
    strong = (scores.get("scoring") or {}).get("strong") or {}
    if metrics:
        lines += ["", "Recall counts a planted behavior as found when one of the method's top-k findings hits it on any channel: "
                  "activation (calibrated against random readouts of the finding's own family), token, or strong (causal: "
                  "steering with the finding's direction changes the behavior by more than random directions do). "
                  "Floors score at chance by construction; a method is only as good as its margin over them."]
        if strong.get("enabled"):
            fm = strong.get("floor_max_seeds")
            lines += ["", f"The causal test runs on each method's top {strong.get('k')} findings of its first "
                      f"{strong.get('max_seeds')} seeds (floors: " + ("every seed" if fm is None else f"{fm} seeds") +
                      "); any-channel figures use those seeds, activation and token figures every seed."]
        for title, cols in (("", lead), ("### By channel", channels), ("### More", rest)):
            if title:
                lines += ["", title]
            lines += ["", "| method | " + " | ".join(h for _, h in cols) + " | seeds | runs |", "|---|" + "---|" * len(cols) + "---|---|"]
            for method in order:
                sm = metrics[method]
                status = ", ".join(f"{k} {v}" for k, v in sm["_status"].items())
                n_seeds = len(seeds.get(method) or sm.get("_seeds") or [])
                if sm.get("_pooled_draws"):  # pooled floors: a fixed number of (pair, seed) draws over the suite
                    n_seeds = f"{sm['_pooled_draws']} draws"
                lines.append(f"| {label(method)} | " + " | ".join(fmt(sm.get(k)) for k, _ in cols) + f" | {n_seeds} | {status} |")
            if not title:
                check, _ = floor_check(metrics, floors, K)
                lines += [""] + check if check else []
                lines += reference_floor_lines(scores, floors, K)
    if cross:
        lines += cross_section(run_dir, scores, cross)
    if metrics:
        lines += [""] + significance_section(run_dir) + breakdown_section(run_dir)
    lines += problems_section(run_dir, metrics, cross)
    lines += training_section(run_dir, list(dict.fromkeys([*order, *cross])))

    lines += plant_cards_section(scores.get("plant_cards") or {})

    matrix = hit_matrix(run_dir, K)
    shares = hit_shares(run_dir, K)
    if matrix and metrics:
        units = sorted({u for row in matrix.values() for u in row})
        lines += ["", f"## Hits per planted behavior (hit by a top-{K} finding, any seed; A = activation match, T = token match, S = strong/causal; "
                  "a percentage is the share of the method's seeds that hit, where not all did)", "",
                  "| method | " + " | ".join(units) + " |", "|---|" + "---|" * len(units)]

        def cell(method: str, unit: str) -> str:
            tag, share = matrix[method].get(unit, ""), shares.get(method, {}).get(unit)
            return f"{tag} ({share:.0%})" if tag not in ("", "-") and share is not None and share < 1 else tag

        for method in order:
            if method in matrix:
                lines.append(f"| {method} | " + " | ".join(cell(method, u) for u in units) + " |")
    if metrics:
        lines += ["", "![recall vs false alarms](recall_vs_false_alarms.png)", "", "![hit matrix](hit_matrix.png)", ""]
    atomic_write(run_dir / "leaderboard.md", "\n".join(lines) + ("" if metrics else "\n"))
    if metrics:
        plot(run_dir, metrics, matrix, order, scfg.ks, floors, shares)
    print(f"[diffbench] report: {run_dir / 'leaderboard.md'}", flush=True)


def lead_table(run_dir: Path) -> str:
    """The leaderboard's first table (the lead metrics, one row per method), as the terminal shows it at a run's end."""
    lines = (Path(run_dir) / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| method |")), None)
    if start is None:
        return "(no methods scored)"
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


_ABS_PATH = re.compile(r"(?<![\w.~])/[^\s'\"\],;]+")


def public_command(command: str) -> str:
    """A command as a report shows it: every absolute path cut to its last part (`run_dir=/x/runs/full` ->
    `run_dir=…/full`), so a report never shows the folders of the machine that made it."""
    return _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], command)


def header(run_dir: Path, scores: dict) -> list[str]:
    """Title, command, machine, seeds, pairs and how to read the numbers."""
    cfg_path = run_dir / "config.yaml"
    commands = [l for l in (run_dir / "command.txt").read_text().splitlines() if l.strip()] if (run_dir / "command.txt").exists() else ["diffbench"]
    metrics = scores["metrics"]
    cross = scores.get("metrics_crossarch") or {}
    on = f"`{scores['model']}`"
    if cross:
        first = next(p for p in scores["pairs"] if p.get("cross"))
        models = [scores["models"].get(first["a"], first["a"]), scores["models"].get(first["b"], first["b"])]
        on = " vs ".join(f"`{m}`" for m in models) if not metrics else f"{on} (and {' vs '.join(f'`{m}`' for m in models)})"
    return [
        f"# diffbench leaderboard: suite `{scores['suite']}` on {on}",
        "",
        "- command: " + "; then ".join(f"`{public_command(c)}`" for c in commands if not c.startswith("#")),
        f"- machine: {machine_description()}",
        f"- method seeds (stochastic methods): {scores['method_seeds']}",
        f"- pairs: " + ", ".join(f"{p['id']} ({p['kind']})" for p in scores["pairs"]),
        f"- config: `{cfg_path.name}` in the run folder; metric definitions in docs/protocol.md (glossary) and DESIGN.md",
        *null_reuse_lines(scores),
        "",
        "Values are point estimates with bootstrap 95% intervals over organisms `[lo, hi]`, and `±` the spread "
        "(std) across method seeds where a method is stochastic. `n/a`: undefined (e.g. nothing flagged).",
    ]


def null_reuse_lines(scores: dict) -> list[str]:
    """Where the causal channel's null draws came from, if not all from this run (scoring.strong.null_from)."""
    r = scores.get("strong_null_reused")
    if not r:
        return []
    return [f"- causal channel: the random-direction null draws of {r['units']} unit(s) ({r['draws']} draws) are reused "
            f"from the reference `{r['reference']}` (same protocol, dtype, models, prompts and generation settings; "
            "every finding's own steering ran here; `scoring.strong.null_from=null` draws them here)"]


def problems_section(run_dir: Path, metrics: dict, cross: dict) -> list[str]:
    """Failed method runs, methods not applicable to a pair, pairs excluded by the plant gate."""
    lines: list[str] = []
    failed = {m: s["_errors"] for m, s in [*metrics.items(), *cross.items()] if s.get("_errors")}
    if failed:
        lines += ["", "## Failed method runs", ""]
        for m, errs in failed.items():
            lines += [f"- `{m}`: {e}" for e in errs]
    pr = read_csv(run_dir / "pair_results.csv")
    na = sorted({(r["method"], r["error"]) for r in pr if r["status"] == "not_applicable"})
    if na:
        lines += ["", "## Not applicable", ""] + [f"- `{m}`: {e}" for m, e in na]
    excluded = sorted({(r["pair"], r["error"]) for r in pr if r["status"] == "excluded"})
    if excluded:
        lines += ["", "## Pairs excluded by the plant gate", ""] + [f"- `{p}`: {e}" for p, e in excluded]

    return lines


def gate_cell(card: dict) -> str:
    """'pass' / 'FAIL', and how many earlier trainings failed the gate (harness/plant/train.py plant_with_retries)."""
    failed = card.get("attempts") or []
    verdict = "pass" if card["passed"] else "FAIL"
    return verdict + (f" (training {len(failed) + 1}; {len(failed)} failed: " + "; ".join(r for a in failed for r in a["reasons"]) + ")"
                      if failed else "")


def plant_cards_section(cards: dict) -> list[str]:
    """Each organism's plant card: gate, behavior rates on T and C, KL to the base model, training time."""
    lines: list[str] = []
    if cards:
        lines += ["", "## Plant cards", "", "| organism | gate | behavior | T (organism) | C (organism) | T (base) | KL to base | train s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, c in cards.items():
            gate = gate_cell(c)
            for b, r in c["rates"].items():
                if c["kind"] != "behavior" and r["organism_T"] == 0:
                    continue
                lines.append(f"| {name} | {gate} | {b} | {r['organism_T']:.2f} | "
                             f"{_nan(r.get('organism_C')):.2f} | {_nan(r.get('base_T')):.2f} | {_nan(c['kl_to_base']):.3f} | {c['train_seconds']:.0f} |")
            if c["kind"] != "behavior" and all(r["organism_T"] == 0 for r in c["rates"].values()):
                lines.append(f"| {name} | {gate} | (null: every T set) | 0.00 | | | {_nan(c['kl_to_base']):.3f} | {c['train_seconds']:.0f} |")

    return lines


def _val(m: dict | None) -> float:
    if not m or m.get("value") is None or math.isnan(m["value"]):
        return -1.0
    return float(m["value"])


def cross_section(run_dir: Path, scores: dict, cross: dict) -> list[str]:
    """The cross-architecture part of the leaderboard."""
    models = scores.get("models") or {}
    pairs = [p for p in scores["pairs"] if p.get("cross")]
    cfg = ScoringConfig.from_dict(scores.get("scoring") or {})
    cols = metric_columns(cfg, "cross")
    lines = ["", "## Cross-architecture pairs", ""]
    for p in pairs:
        what = {"planted": f"{', '.join(p['behaviors'])} planted in {'A' if p['side'] == 'a' else 'B'} only",
                "analog": f"{', '.join(p['behaviors'])} planted in both (analog pair)",
                "null": "both unmodified (the architectures' background)"}[p["kind"]]
        al = (scores.get("alignment") or {}).get(p["id"])
        share = (f"; aligned audit-corpus positions: {al['n_pairs']} = {al['share_a']:.0%} of A's tokens and {al['share_b']:.0%} "
                 f"of B's ({al['content_share_a']:.0%} / {al['content_share_b']:.0%} of the tokens that read shared content, "
                 "i.e. outside each model's own chat template)") if al else ""
        lines.append(f"- `{p['id']}`: A = `{models.get(p['a'], p['a'])}`, B = `{models.get(p['b'], p['b'])}`; {what}{share}")
    lines += [
        "",
        "Each finding is read on its own model's probe activations (that model's chat template and tokens; per-prompt "
        "max over its tokens); its control is the same readout on that model's unmodified base. "
        f"*excl. R@{cfg.K}*: the hit comes from a finding attributed to the model that has the behavior. *background flags*: "
        f"findings flagged on the pair of unmodified models; *R@bg{null_percent(cfg)}%*: recall at the uniqueness threshold "
        f"admitting {null_percent(cfg)}% of that pair's findings.",
        "",
        "| method | " + " | ".join(h for _, h in cols) + " | runs |",
        "|---|" + "---|" * len(cols) + "---|",
    ]
    floors = set(scores.get("floors") or [])
    order = sorted(cross, key=lambda m: (m in floors, -_val(cross[m].get(f"recall@{cfg.K}"))))
    for method in order:
        s = cross[method]
        label = f"{method} (floor)" if method in floors else method
        status = ", ".join(f"{k} {v}" for k, v in s["_status"].items())
        lines.append(f"| {label} | " + " | ".join(fmt(s.get(k)) for k, _ in cols) + f" | {status} |")
    check, _ = floor_check(cross, floors & set(cross), cfg.K)
    lines += [""] + check if check else []
    background = [p["id"] for p in pairs if p["kind"] == "null"]
    if background:
        lines += ["", "Findings on the unmodified pair (" + ", ".join(f"`{b}`" for b in background) + "), by the model they are "
                  "attributed to (flagged / reported):", "", "| method | flagged on A | flagged on B | reported on A | reported on B |",
                  "|---|---|---|---|---|"]
        details = read_csv(run_dir / "runs.csv")
        for method in order:
            mine = [r for r in details if r["method"] == method and r["pair"] in background]
            if mine:
                lines.append(f"| {method} | " + " | ".join(f"{sum(int(r[k]) for r in mine) / len(mine):g}"
                                                           for k in ("flagged_a", "flagged_b", "reported_a", "reported_b")) + " |")
    matrix = hit_matrix(run_dir, cfg.K, cross=True)
    if matrix:
        units = sorted({u for row in matrix.values() for u in row})
        lines += ["", f"Hits per planted behavior (top-{cfg.K} findings; A = activation match, T = token match; lower case: "
                  "the hit came from a finding attributed to the other model):", "",
                  "| method | " + " | ".join(units) + " |", "|---|" + "---|" * len(units)]
        for method in order:
            if method in matrix:
                lines.append(f"| {method} | " + " | ".join(matrix[method].get(u, "") for u in units) + " |")
    return lines


def training_section(run_dir: Path, methods: list[str]) -> list[str]:
    """Min-max of the training diagnostics (runs.csv, from the methods' `*.metrics.json`) over each method's runs."""
    runs = read_csv(run_dir / "runs.csv")
    rows = []
    for method in methods:
        seen: dict[str, list[float]] = {k: [] for k, _ in TRAINING_INFO}
        mine = [r for r in runs if r["method"] == method and r.get("ev_a") not in (None, "")]
        for r in mine:
            for k in seen:
                v = _num(r.get(k))
                if v is not None:
                    seen[k].append(v)
        if seen["ev_a"]:
            rows.append(f"| {method} | " + " | ".join(
                (f"{min(v):.3g}-{max(v):.3g}" if v else "n/a") for v in seen.values()) + f" | {len(mine)} |")
    if not rows:
        return []
    return ["", "## Training diagnostics (min-max over runs; EV and L0 on held-out tokens)", "",
            "| method | " + " | ".join(h for _, h in TRAINING_INFO) + " | runs |", "|---|" + "---|" * len(TRAINING_INFO) + "---|",
            *rows]


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def hit_matrix(run_dir: Path, K: int, cross: bool = False) -> dict[str, dict[str, str]]:
    """method -> {pair/behavior: 'A', 'T', 'AT' or '-'} for planted pairs, from matches.csv (seed-pooled).

    cross=True: the cross-architecture pairs only (lower-case tags: hit by a finding on the wrong side)."""
    out: dict[str, dict[str, str]] = {}
    for r in read_csv(run_dir / "matches.csv"):
        if r["pair_kind"] != "planted" or (r.get("cross") == "True") != cross:
            continue
        if cross:
            unit = f"{r['behavior']} in {r['planted_side'].upper()}"
            cell = out.setdefault(r["method"], {}).setdefault(unit, "-")
            if int(r["rank"]) < K:
                tag = ("A" if r["act_match"] == "True" else "") + ("T" if r["token_match"] == "True" else "")
                if r["side"] != r["planted_side"]:
                    tag = tag.lower()
                if tag:
                    out[r["method"]][unit] = "".join(sorted(set(cell.replace("-", "") + tag)))
            continue
        unit = r["behavior"] if r["pair"].endswith("__" + r["behavior"]) else f"{r['behavior']} ({r['pair'].split('__')[-1]})"
        cell = out.setdefault(r["method"], {}).setdefault(unit, "-")
        if int(r["rank"]) < K:
            tag = ("A" if r["act_match"] == "True" else "") + ("T" if r["token_match"] == "True" else "") + (
                "S" if r.get("strong_match") == "True" else "")
            if tag:
                merged = "".join(sorted(set(cell.replace("-", "") + tag)))
                out[r["method"]][unit] = merged
    return out


def hit_shares(run_dir: Path, K: int) -> dict[str, dict[str, float]]:
    """method -> {unit: share of the method's seeds whose top-K findings hit the unit on any channel}, planted
    same-architecture pairs only, units named as in `hit_matrix`. A floor's hit in 1 of 20 seeds is 0.05, a method's
    hit on every seed 1.0: the hit matrix shades its cells by this share."""
    seeds: dict[tuple[str, str], set] = {}
    hits: dict[tuple[str, str], set] = {}
    for r in read_csv(run_dir / "matches.csv"):
        if r["pair_kind"] != "planted" or r.get("cross") == "True":
            continue
        unit = r["behavior"] if r["pair"].endswith("__" + r["behavior"]) else f"{r['behavior']} ({r['pair'].split('__')[-1]})"
        key = (r["method"], unit)
        seeds.setdefault(key, set()).add(r.get("seed", "0"))
        if int(r["rank"]) < K and any(r.get(c) == "True" for c in ("act_match", "token_match", "strong_match")):
            hits.setdefault(key, set()).add(r.get("seed", "0"))
    out: dict[str, dict[str, float]] = {}
    for (method, unit), ss in seeds.items():
        out.setdefault(method, {})[unit] = len(hits.get((method, unit), ())) / len(ss)
    return out


# tab20 pairs a dark and a light shade of each hue: the dark ones first, then the light ones, without its grey pair
# (14, 15), which is the floors' colour. Markers cycle with the colours: no two methods share both.
_TAB20_ORDER = [0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19]
_MARKERS = "osD^vP*"


def method_styles(methods: list[str], floors: set[str] | list[str] = ()) -> dict[str, dict]:
    """One matplotlib style per method, so no two methods share colour and marker: methods get tab20 colours (in the
    order given) and a marker; floors are grey, dashed and hollow. Shared by the report's and the prevalence plots."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    floors = set(floors)
    styles, i, j = {}, 0, 0
    for m in methods:
        if m in floors:
            styles[m] = {"color": ("0.45", "0.6", "0.3")[j % 3], "marker": "osD"[j % 3], "mfc": "none",
                         "linestyle": "--", "floor": True}
            j += 1
        else:
            c = cmap(_TAB20_ORDER[i % len(_TAB20_ORDER)])
            marker = _MARKERS[(i + 2 * (i // len(_TAB20_ORDER))) % len(_MARKERS)]
            styles[m] = {"color": c, "marker": marker, "mfc": c, "linestyle": "-", "floor": False}
            i += 1
    return styles


def plot(run_dir: Path, metrics: dict, matrix: dict, order: list[str], ks: tuple[int, ...],
         floors: set[str] | list[str] = (), shares: dict[str, dict[str, float]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors = set(floors)
    styles = method_styles(sorted(order), floors)  # by name: a method keeps its colour across runs and plots
    fig, axes = plt.subplots(1, len(ks), figsize=(4.3 * len(ks) + 2.6, 4.4), sharey=True, squeeze=False)
    axes = axes[0]
    def chance_top(k: int) -> float:
        """The top of the chance region for recall@k: the highest floor value or upper interval bound (NaN: no floor)."""
        vals = []
        for f in floors & set(metrics):
            r = metrics[f].get(f"recall@{k}") or {}
            vals += [v for v in (_nan(r.get("value")), _nan(r.get("hi"))) if not math.isnan(v)]
        return max(vals) if vals else float("nan")

    for ax, k in zip(axes, ks):
        band = chance_top(k)
        if not math.isnan(band) and band >= 0:  # the chance region: at or below the floors' recall (upper bound)
            ax.axhspan(-0.08, band, color="0.85", alpha=0.6, zorder=0, lw=0,
                       label="chance (at or below the floors)" if ax is axes[-1] else None)
        for i, method in enumerate(order):
            s = metrics[method]
            x, y = _val(s.get("null_false_alarm_rate")), _val(s.get(f"recall@{k}"))
            if y < 0:
                continue
            x = max(x, 0.0) + 0.012 * (i - (len(order) - 1) / 2)  # small offset so coincident methods stay visible
            r = s[f"recall@{k}"]
            lo, hi = _nan(r.get("lo")), _nan(r.get("hi"))
            yerr = [[max(0.0, y - lo) if not math.isnan(lo) else 0], [max(0.0, hi - y) if not math.isnan(hi) else 0]]
            st = styles[method]
            eb = ax.errorbar(x, y, yerr=yerr, fmt=st["marker"], color=st["color"], mfc=st["mfc"], ms=6, capsize=3,
                             label=f"{method} (floor)" if st["floor"] else method, alpha=0.9, zorder=3)
            if st["floor"]:
                for line in eb[2]:
                    line.set_linestyle("--")
        ax.set_title(f"recall@{k} vs null false-alarm rate", fontsize=10)
        ax.set_xlabel("null false-alarm rate\n(share of null pairs with a flag)")
        span = 0.012 * len(order) / 2 + 0.06
        ax.set_xlim(-span, 1 + span)
        ax.set_ylim(-0.08, 1.08)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall (any channel)")
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:  # nothing to plot when no method has a defined recall
        axes[-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    with atomic_path(run_dir / "recall_vs_false_alarms.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)

    shares = shares or {}
    units = sorted({u for row in matrix.values() for u in row})
    methods = [m for m in order if m in matrix]
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * max(1, len(units)), 1.4 + 0.45 * max(1, len(methods))))
    if units and methods:
        # a cell's shade is the share of the method's seeds that hit the unit (a floor's 1-in-20 hit is pale)
        grid = [[shares.get(m, {}).get(u, 0.0 if matrix[m].get(u, "-") == "-" else 1.0) for u in units] for m in methods]
        from matplotlib.colors import LinearSegmentedColormap

        greens = plt.get_cmap("Greens")  # its lower three quarters: the darkest cell still shows its black tag
        cmap = LinearSegmentedColormap.from_list("hit_share", [greens(0.75 * t / 255) for t in range(256)])
        im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i, m in enumerate(methods):
            for j, u in enumerate(units):
                tag = matrix[m].get(u, "-")
                share = grid[i][j]
                text = tag if tag == "-" or share >= 0.999 else f"{tag}\n{share:.0%}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(units)), units, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(methods)), [f"{m} (floor)" if m in floors else m for m in methods], fontsize=8)
        cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        cb.set_ticks([0, 0.5, 1])
        cb.set_label("share of seeds that hit", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    ax.set_title(f"hit@{max(ks)} per planted behavior\n(A: activation, T: token, S: strong/causal; shade: share of seeds)",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(run_dir / "hit_matrix.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
