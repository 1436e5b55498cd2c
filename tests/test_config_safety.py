"""Config is data (issue #39): no route from a config to running code. Each test plants a marker-writing payload
through one route (command line, suite file on the search path, run folder given to `diffbench report`) and checks
that the command is refused with one message, exit 2, no traceback, and that the payload never ran."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from diffbench.harness.schema import code_keys, sets_plugins


def _payload(tmp_path: Path) -> tuple[Path, Path]:
    """A .py file that writes `marker` when imported."""
    marker = tmp_path / "RAN"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return evil, marker


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffbench.harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _refused(out: subprocess.CompletedProcess, words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]


# -- unit: what counts as code ----------------------------------------------------------------------------------------

def test_code_keys_finds_every_instantiating_key_and_passes_hydra_defaults():
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert code_keys(OmegaConf.to_container(cfg, resolve=False), plugins_allowed=False) == []  # shipped defaults pass
    bad = {"method": {"m": {"name": "x", "params": {"p": {"_target_": "os.system"}}}},
           "hydra": {"callbacks": {"x": {"_target_": "builtins.open"}},
                     "job_logging": {"handlers": {"h": {"()": "builtins.open"}, "k": {"class": "os.system"},
                                                  "s": {"class": "logging.StreamHandler", "stream": "ext://os.system"}}},
                     "launcher": {"_target_": "builtins.exec"},
                     "job": {"env_set": {"LD_PRELOAD": "/tmp/x.so"}}},
           "plugins": ["evil.py"]}
    errors = "\n".join(code_keys(bad, plugins_allowed=False))
    for words in ("method.m.params.p._target_", "hydra.callbacks", "handlers.h.()", "handlers.k.class", "ext://os.system",
                  "hydra.launcher._target_", "LD_PRELOAD", "plugins="):
        assert words in errors, (words, errors)
    assert sets_plugins(["plugins=[a.py]"]) and sets_plugins(["++plugins=[a.py]"]) and not sets_plugins(["suite=tiny"])


# -- the command line -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", [
    ["+hydra.callbacks.x._target_=diffbench.core.plugins.load_plugins", "+hydra.callbacks.x._args_=[[EVIL]]"],
    ["+hydra.job_logging.handlers.x.class=diffbench.core.plugins.load_plugins"],
    ["+suite.cross._target_=diffbench.core.plugins.load_plugins"],
])
def test_instantiating_keys_on_the_command_line_are_refused_before_anything_runs(override, tmp_path):
    evil, marker = _payload(tmp_path)
    out = _cli([*TINY, *[o.replace("EVIL", str(evil)) for o in override]], tmp_path)
    _refused(out, "config is data, not code")
    assert not marker.exists() and not (tmp_path / "runs").exists()


# -- a suite file on hydra.searchpath -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ("hydra:\n  callbacks:\n    x:\n      _target_: diffbench.core.plugins.load_plugins\n      _args_: [[EVIL]]\n",
     "hydra.callbacks"),
    ("hydra:\n  job_logging:\n    handlers:\n      x:\n        '()': diffbench.core.plugins.load_plugins\n"
     "        entries: [EVIL]\n", "hydra.job_logging.handlers.x.()"),
    ("plugins: [EVIL]\n", "plug-ins are code"),
])
def test_a_suite_file_cannot_run_code(body, words, tmp_path):
    evil, marker = _payload(tmp_path)
    (tmp_path / "conf" / "suite").mkdir(parents=True)
    (tmp_path / "conf" / "suite" / "evil.yaml").write_text("# @package _global_\n" + body.replace("EVIL", str(evil)))
    out = _cli([*TINY, "suite=evil", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path)
    _refused(out, words)
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_plugins_from_the_command_line_still_load(tmp_path):
    """The user's own choice: the guard lets plugins=[...] through (the file runs before the stages)."""
    evil, marker = _payload(tmp_path)
    out = _cli([*TINY, f"plugins=[{evil}]", "suite.behaviors=[no_such_behavior]"], tmp_path)
    assert marker.exists() and out.returncode == 2 and "no_such_behavior" in out.stderr, out.stderr[-2000:]


# -- a run folder given to `diffbench report` ------------------------------------------------------------------------

def _run_folder(tmp_path: Path, extra: str) -> Path:
    from conftest import make_cfg
    from omegaconf import OmegaConf

    run = tmp_path / "sent"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(make_cfg(run), resolve=True) + extra)
    return run


def test_report_does_not_import_a_run_folders_plugins(tmp_path):
    evil, marker = _payload(tmp_path)
    run = _run_folder(tmp_path, "")
    text = (run / "config.yaml").read_text().replace("plugins: []", f"plugins:\n- {evil}")
    (run / "config.yaml").write_text(text)
    out = _cli(["report", str(run)], tmp_path)
    assert not marker.exists(), "diffbench report imported a plug-in named by the run folder"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_report_refuses_instantiating_keys_in_a_run_folder(tmp_path):
    evil, marker = _payload(tmp_path)
    run = _run_folder(tmp_path, f"hydra:\n  callbacks:\n    x:\n      _target_: builtins.open\n      _args_: [{marker}, w]\n")
    text = (run / "config.yaml").read_text().replace("  name: tiny-llama", "  name: tiny-llama\n  _target_: os.getcwd", 1)
    (run / "config.yaml").write_text(text)
    out = _cli(["report", str(run)], tmp_path)
    _refused(out, "model._target_")
    assert "hydra.callbacks" in out.stderr and not marker.exists()


def test_report_of_an_invalid_config_yaml_is_one_message(tmp_path):
    run = tmp_path / "sent"
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: [unclosed\n")
    _refused(_cli(["report", str(run)], tmp_path), "not a valid run config")
    (run / "config.yaml").write_text("- just\n- a list\n")
    _refused(_cli(["report", str(run)], tmp_path), "not a valid run config")


def test_report_of_a_wrong_typed_config_yaml_is_one_message(tmp_path):
    run = _run_folder(tmp_path, "")
    text = (run / "config.yaml").read_text()
    assert "  steps: 12\n" in text
    (run / "config.yaml").write_text(text.replace("  steps: 12\n", "  steps: twelve\n", 1))
    _refused(_cli(["report", str(run)], tmp_path), "plant.steps must be an integer")


def test_evaluate_refuses_instantiating_keys_and_suite_plugins(tmp_path):
    evil, marker = _payload(tmp_path)
    out = _cli(["evaluate", "quick", "+hydra.callbacks.x._target_=diffbench.core.plugins.load_plugins",
                f"+hydra.callbacks.x._args_=[[{evil}]]", f"run_dir={tmp_path / 'ev'}"], tmp_path)
    _refused(out, "hydra.callbacks")
    (tmp_path / "conf" / "suite").mkdir(parents=True)
    (tmp_path / "conf" / "suite" / "evil.yaml").write_text(f"# @package _global_\nplugins: [{evil}]\n")
    out = _cli(["evaluate", "quick", "suite=evil", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                f"run_dir={tmp_path / 'ev'}"], tmp_path)
    _refused(out, "plug-ins are code")
    assert not marker.exists() and not (tmp_path / "ev").exists()
