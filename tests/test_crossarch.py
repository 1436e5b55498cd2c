"""Cross-architecture suites: suite parsing, one-sided scoring, and the pipeline on two tiny models
with different tokenizers and widths (tiny-llama: SmolLM2's tokenizer, width 64, 4 layers;
tiny-othertok: a 1k BPE, width 80, 6 layers)."""

import csv
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from diffbench.harness import pipeline

from diffbench.harness.workspace import Workspace
from diffbench.harness.score.config import ScoringConfig
from diffbench.harness.score.scoring import Keywords, MatchRecord, PairResult, ProbeActs, compute_metrics, match_finding_one_side, probe_null
from diffbench.core.activations import LayerActs
from diffbench.harness.suite import Suite
from diffbench.core import Finding, Readout

TINY = ["model=tiny-llama", "suite=tinycross", "plant.steps=12", "plant.gate.max_new_tokens=6", "plant.gate.kl_texts=4",
        "collect.layers=[0.5]", "progress=false", "scoring.bootstrap=50"]


def make_cfg(run_dir, extra=()):
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("config", overrides=[*TINY, f"run_dir={run_dir}", *extra])


def test_crossarch_suite_pairs():
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["suite=crossarch"])
    suite = Suite.from_config(cfg.suite)
    kinds = {p.id: (p.kind, p.side, p.a, p.b, p.cross) for p in suite.pairs}
    assert kinds == {
        "topic_censorship@smollm2-135m__base@gemma3-270m": ("planted", "a", "topic_censorship@smollm2-135m", "base@gemma3-270m", True),
        "base@smollm2-135m__topic_censorship@gemma3-270m": ("planted", "b", "base@smollm2-135m", "topic_censorship@gemma3-270m", True),
        "topic_censorship@smollm2-135m__topic_censorship@gemma3-270m": (
            "analog", "both", "topic_censorship@smollm2-135m", "topic_censorship@gemma3-270m", True),
        "base@smollm2-135m__base@gemma3-270m": ("null", "", "base@smollm2-135m", "base@gemma3-270m", True),
    }
    # each organism is planted once, on its own base model, and reused by the pairs it belongs to
    assert {n: o.base for n, o in suite.organisms.items()} == {
        "topic_censorship@smollm2-135m": "smollm2-135m", "topic_censorship@gemma3-270m": "gemma3-270m"}
    assert suite.plant_recipes == {"gemma3-270m": "lora_gemma"}
    assert "mean_diff" in suite.methods and "dfc" in suite.methods


def test_per_model_recipe_keeps_the_gate(tmp_path):
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["suite=crossarch", f"run_dir={tmp_path}"])
    ws = Workspace(cfg, tmp_path)
    gemma = ws.recipe_for("gemma3-270m")
    assert gemma["gate"] == ws.recipe["gate"] and "defaults" not in gemma
    assert ws.recipe_for("smollm2-135m") is ws.recipe


def _probe(acts: torch.Tensor, n_texts: int, labels) -> ProbeActs:
    n_tok = acts.shape[0] // n_texts
    text_idx = torch.arange(n_texts).repeat_interleave(n_tok)
    pos = torch.arange(n_tok).repeat(n_texts)
    return ProbeActs(LayerActs(acts, text_idx, pos, torch.zeros_like(pos)), np.array(labels), torch.zeros(n_texts, dtype=torch.long))


def one_side(f, side, probe, control, cfg):
    """(AUROC, control AUROC, activation match, token match) under the calibrated rule."""
    act, tok = match_finding_one_side(f, side, probe, control, Keywords(frozenset()), cfg, probe_null(probe, lambda s, l: probe, cfg))
    return act.auroc, act.control, act.match, tok


def test_one_sided_matching_uses_the_side_model_and_its_base():
    torch.manual_seed(0)
    # realistic widths and noise: in 8 dimensions with tiny noise a random direction sees the plant as well as the
    # finding does, and the calibrated rule (rightly) refuses the match
    n, n_tok, d_a, d_b = 20, 5, 48, 64
    labels = [1] * 10 + [0] * 10
    feat = torch.zeros(d_b)
    feat[3] = 1.0
    base_b = torch.randn(n * n_tok, d_b)
    org_b = base_b.clone()
    org_b.view(n, n_tok, d_b)[:10, 2, 3] += 8.0  # the plant: feature 3 fires on one token of every trigger prompt
    acts_a = torch.randn(n * n_tok, d_a)
    cfg = ScoringConfig()
    f = Finding("x", 1.0, True, Readout(1, 1, w_a=None, w_b=feat, act="relu"), side="b")
    auroc, ctrl, act, tok = one_side(f, "b", _probe(org_b, n, labels), _probe(base_b, n, labels), cfg)
    assert auroc == 1.0 and ctrl < 0.65 and act and not tok
    # the unmodified model is its own control: never an activation match
    _, _, act_base, _ = one_side(f, "b", _probe(base_b, n, labels), _probe(base_b, n, labels), cfg)
    assert not act_base
    # a finding that does not read model A is constant there
    auroc_a, _, act_a, _ = one_side(f, "a", _probe(acts_a, n, labels), _probe(acts_a, n, labels), cfg)
    assert auroc_a == 0.5 and not act_a
    # a crosscoder latent reading both models: only B's part is used on B's tokens
    g = Finding("y", 1.0, True, Readout(1, 1, w_a=torch.ones(d_a) * 100, w_b=feat, act="relu"), side="b")
    assert one_side(g, "b", _probe(org_b, n, labels), _probe(base_b, n, labels), cfg)[2]


def test_exclusive_recall_needs_the_right_side():
    cfg = ScoringConfig(bootstrap=0)
    res = [PairResult("m", 0, "p1", "planted", ("t",), "ok", n_findings=2, n_flagged=1, uniqueness=[2.0, 1.0], flagged=[True, False]),
           PairResult("m", 0, "p2", "planted", ("t",), "ok", n_findings=1, uniqueness=[1.0], flagged=[False]),
           PairResult("m", 0, "bg", "null", (), "ok", n_findings=1, n_flagged=1, uniqueness=[0.5], flagged=[True])]
    rec = [MatchRecord("m", 0, "p1", "planted", "t", 0, "f0", 2.0, True, 0.9, 0.5, True, False, cross=True, side="a", planted_side="b"),
           MatchRecord("m", 0, "p2", "planted", "t", 0, "g0", 1.0, False, 0.9, 0.5, True, False, cross=True, side="b", planted_side="b")]
    m = compute_metrics(res, rec, cfg, cross=True)["m"]
    assert m["recall@20"]["value"] == 1.0 and m["exclusive_recall@20"]["value"] == 0.5
    assert m["null_flagged_per_pair"]["value"] == 1.0
    assert "exclusive_recall@20" not in compute_metrics(res, rec, cfg)["m"]


@pytest.fixture(scope="module")
def tiny_cross_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("crossrun")
    cfg = make_cfg(run_dir)
    pipeline.run(cfg, run_dir, ["plant", "collect", "diff", "score", "report"])
    return run_dir, cfg


def test_cross_pipeline_runs_and_reports(tiny_cross_run):
    run_dir, _ = tiny_cross_run
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["metrics"] == {}  # no same-architecture pairs in this suite
    cross = scores["metrics_crossarch"]
    run_cfg = tiny_cross_run[1]
    assert set(cross) == set(run_cfg["method"])  # every configured method is reported, none dropped
    bg = "base@tiny-llama__base@tiny-othertok"
    al = scores["alignment"][bg]
    assert al["n_pairs"] > 0 and 0 < al["share_a"] <= 1 and al["content_share_shorter"] > 0.5
    with open(run_dir / "pair_results.csv") as f:
        rows = {(r["method"], r["pair"]): r for r in csv.DictReader(f)}
    # mean_diff is not applicable across architectures, with the reason; it is not dropped
    assert rows[("mean_diff", bg)]["status"] == "not_applicable"
    assert "shared activation space" in rows[("mean_diff", bg)]["error"]
    # the cross table ends with the floors' own check, as the same-architecture lead table does
    board = (run_dir / "leaderboard.md").read_text()
    cross_part = board.split("## Cross-architecture pairs")[1]
    check = next(line for line in cross_part.splitlines() if line.startswith("Floor check (mean over seeds, any channel): "))
    assert "`random_directions` recall@1" in check and ("within the bounds" in check or "ABOVE" in check)
    # the HTML overview shows the cross table with its own columns and floor check, and no empty same-model tables
    index = (run_dir / "html" / "index.html").read_text()
    assert 'id="leaderboard"' not in index and 'id="crossarch"' in index
    cross_html = index.split('id="crossarch"')[1].split("</table>")[0]
    assert "excl. R@" in cross_html and "background flags" in cross_html and "random_directions (floor)" in cross_html
    assert "Floor check (mean over seeds, any channel)" in index
    assert cross["mean_diff"]["_status"].get("not_applicable", 0) >= 1 and "failed" not in cross["mean_diff"]["_status"]
    assert cross["mean_diff"]["recall@20"]["value"] is None  # no value (NaN, written as null): not scored, not a miss
    for m in ("random_directions", "l1_crosscoder", "batchtopk_crosscoder", "dfc"):
        assert rows[(m, bg)]["status"] == "ok", rows[(m, bg)]
    # methods that need a shared space, vocabulary or identical weights say so instead of failing
    shared = {"pca_diff", "diff_norm", "diff_sae", "dict_drift", "kl_diff", "logit_diff_tokens", "weight_svd"} & set(cross)
    for m in shared:
        assert rows[(m, bg)]["status"] == "not_applicable" and rows[(m, bg)]["error"], rows[(m, bg)]
    board = (run_dir / "leaderboard.md").read_text()
    assert "## Cross-architecture pairs" in board and "## Not applicable" in board and "background flags" in board
    assert "tiny-llama" in board and "tiny-othertok" in board


def test_cross_findings_read_each_model_at_its_own_layer(tiny_cross_run):
    run_dir, _ = tiny_cross_run
    from diffbench.core import load_findings

    findings, _ = load_findings(run_dir / "findings" / "dfc" / "base@tiny-llama__base@tiny-othertok@s0")
    assert findings
    for f in findings:
        assert (f.readout.layer_a, f.readout.layer_b) == (2, 3)  # the middle of 4 and of 6 layers
        w = f.readout.w_a if f.side == "a" else f.readout.w_b
        other = f.readout.w_b if f.side == "a" else f.readout.w_a
        assert w is not None and other is None  # DFC-exclusive latents read their own model only
        assert w.shape[0] == (64 if f.side == "a" else 80)
    rand, _ = load_findings(run_dir / "findings" / "random_directions" / "base@tiny-llama__base@tiny-othertok@s0")
    assert {f.side for f in rand} == {"a", "b"}


def test_cross_report_rebuilds(tiny_cross_run, tmp_path):
    run_dir, cfg = tiny_cross_run
    pipeline.run(OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else cfg, run_dir, ["score", "report"])
    assert "## Cross-architecture pairs" in (run_dir / "leaderboard.md").read_text()
