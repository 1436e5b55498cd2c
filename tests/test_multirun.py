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


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, both methods."""
    run = tmp_path_factory.mktemp("single")
    r = cli([*TINY, "method=[mean_diff,random_directions]", f"run_dir={run}"], run)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_multirun_jobs_merge_into_the_single_process_leaderboard(single, tmp_path, launcher):
    sweep = tmp_path / "sweep"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=30"]
    r = cli(["-m", *TINY, "method=[mean_diff],[random_directions]", f"hydra/launcher={launcher}", *extra,
             f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    assert not (sweep / "0" / "findings" / "random_directions").exists()  # each job ran its own method only
    # every job computes with the single process's CPU thread count (results depend on it): a joblib worker starts
    # with OMP_NUM_THREADS = cores / jobs, which the `threads: auto` setting overrides
    threads = lambda d: {inv["threads"] for inv in json.loads((d / "timing.json").read_text())["invocations"]}
    assert threads(sweep / "0") == threads(sweep / "1") == threads(single)
    r = cli(["report", str(sweep)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    one, merged = (json.loads((d / "scores.json").read_text()) for d in (single, sweep / "merged"))
    assert set(merged["metrics"]) == {"mean_diff", "random_directions"}
    assert merged["metrics"] == one["metrics"]  # values, intervals, seeds, statuses
    body = lambda d: (d / "leaderboard.md").read_text().split("\n## ", 1)[1]
    assert body(sweep / "merged") == body(single)


def test_the_cluster_launcher_example_composes():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["hydra/launcher=cluster"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.timeout_min > 0


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
