"""Scale-out: one Hydra multirun job per method on the joblib launcher; `diffbench report MULTIRUN_DIR` merges the
jobs into the leaderboard a single process writes."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import TINY, make_cfg


def cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "diffbench.harness.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=1200)


def test_multirun_jobs_merge_into_the_single_process_leaderboard(tmp_path):
    single = tmp_path / "single"
    r = cli([*TINY, "method=[mean_diff,random_directions]", f"run_dir={single}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "sweep"
    r = cli(["-m", *TINY, "method=[mean_diff],[random_directions]", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (sweep / "0" / "findings" / "random_directions").exists()  # each job ran its own method only
    r = cli(["report", str(sweep)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    one, merged = (json.loads((d / "scores.json").read_text()) for d in (single, sweep / "merged"))
    assert set(merged["metrics"]) == {"mean_diff", "random_directions"}
    assert merged["metrics"] == one["metrics"]  # values, intervals, seeds, statuses
    assert (sweep / "merged" / "leaderboard.md").read_text().split("\n## ", 1)[1] == (single / "leaderboard.md").read_text().split("\n## ", 1)[1]


def test_merge_refuses_jobs_of_different_runs(tmp_path):
    from diffbench.harness.merge import merge

    for i, steps in enumerate((12, 13)):
        (tmp_path / str(i)).mkdir()
        cfg = OmegaConf.to_container(make_cfg(tmp_path / str(i), [f"plant.steps={steps}"]), resolve=True)
        (tmp_path / str(i) / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    with pytest.raises(ValueError, match="differ in 'plant'"):
        merge(tmp_path)


def test_a_job_runs_a_subset_of_pairs(tmp_path):
    from diffbench.harness.workspace import Workspace

    ws = Workspace(make_cfg(tmp_path, ["pairs=[base__null_selfdistill@0]"]), tmp_path)
    assert [p.id for p in ws.suite.pairs] == ["base__null_selfdistill@0"] and set(ws.suite.organisms) == {"null_selfdistill@0"}
    with pytest.raises(ValueError, match="not pairs of suite"):
        Workspace(make_cfg(tmp_path, ["pairs=[base__nope]"]), tmp_path)
