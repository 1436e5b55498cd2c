"""Methods, detectors and behaviors from outside the package: the tiny suite runs with a method and a
detector from tests/fixtures/outside_method.py (plugins=[file]) and a behavior from tests/fixtures/behaviors/."""

import json
import sys
from pathlib import Path

import pytest
from conftest import make_cfg

from diffbench.core.plugins import PluginError, load_plugins
from diffbench.harness import pipeline
from diffbench.harness.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures"


def test_tiny_suite_runs_an_outside_method_and_behavior(tmp_path):
    cfg = make_cfg(tmp_path, [f"plugins=[{FIXTURES / 'outside_method.py'}]",
                              f"suite.behaviors=[{FIXTURES / 'behaviors'}]",  # a folder: every spec in it
                              "method=[random_directions]", "+method.outside.name=outside_mean_diff",
                              "+method.outside.params.scale=2.0"])
    ws = Workspace(cfg, tmp_path)
    assert set(ws.suite.specs) == {"outside_shout"}
    assert type(ws.suite.specs["outside_shout"].detector).__name__ == "Shouting"
    pipeline.run(cfg, tmp_path, ["plant", "collect", "diff", "score", "report"])
    assert (tmp_path / "plant_cards" / "outside_shout.json").exists()
    card = json.loads((tmp_path / "plant_cards" / "outside_shout.json").read_text())
    planted = json.loads((tmp_path / "findings" / "outside" / "base__outside_shout@s0.status.json").read_text())
    assert planted["status"] == ("ok" if card["passed"] else "excluded")  # a tiny random model rarely learns it
    null = json.loads((tmp_path / "findings" / "outside" / "base__null_selfdistill@0@s0.status.json").read_text())
    assert null["status"] == "ok" and null["n_findings"] == 1
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert "outside" in scores["metrics"] and "| outside" in (tmp_path / "leaderboard.md").read_text()


def test_missing_or_broken_plugins_are_one_clear_error(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        load_plugins([str(tmp_path / "nope.py")])
    with pytest.raises(PluginError, match="importable module name"):
        load_plugins(["no_such_module_anywhere"])
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('broken plugin')\n")
    with pytest.raises(PluginError, match="failed on import: RuntimeError: broken plugin"):
        load_plugins([str(bad)])


def test_unknown_behavior_path_is_one_clear_error(tmp_path):
    from diffbench.tasks.spec import SpecError

    with pytest.raises(SpecError, match="nope.yaml"):
        Workspace(make_cfg(tmp_path, [f"suite.behaviors=[{tmp_path / 'nope.yaml'}]"]), tmp_path)


def test_methods_announced_by_an_installed_package_are_found(tmp_path, monkeypatch):
    """An entry point in the `diffbench.methods` group (what `[project.entry-points."diffbench.methods"]` in a
    package's pyproject installs) is imported with the package's own methods."""
    from diffbench.methods import load_all_methods
    from diffbench.core import METHODS

    (tmp_path / "ep_method_mod.py").write_text(
        "from diffbench.core import Method, register_method\n\n"
        "@register_method\nclass EpMethod(Method):\n    name = 'ep_method'\n\n    def find(self, ctx):\n        return []\n")
    dist = tmp_path / "ep_method-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-method\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[diffbench.methods]\nep_method = ep_method_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    load_all_methods()
    assert "ep_method" in METHODS
    sys.modules.pop("ep_method_mod", None)
