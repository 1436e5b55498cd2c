"""The run config is checked against its schema before any work starts: one error names each bad key."""

import pytest
from hydra import compose, initialize_config_module

from diffbench.harness import pipeline

from diffbench.harness.workspace import Workspace
from diffbench.harness.schema import ConfigError


def cfg_with(*overrides, tmp="/tmp/diffbench-schema-test"):
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("config", overrides=[f"run_dir={tmp}", *overrides])


@pytest.mark.parametrize("suite", ["quick", "full", "crossarch", "tiny", "tinycross", "zoo"])
def test_every_shipped_suite_fits_the_schema(suite):
    from diffbench.harness.schema import check_config
    from omegaconf import OmegaConf

    check_config(OmegaConf.to_container(cfg_with(f"suite={suite}"), resolve=True))


@pytest.mark.parametrize("suite", ["quick", "full", "gpu", "crossarch", "zoo"])
def test_every_shipped_suite_runs_both_floors(suite):
    """A suite that lists its methods must not leave a floor out: recall means nothing without chance beside it."""
    from diffbench.core.method import METHODS
    from diffbench.methods import load_all_methods
    from diffbench.harness.suite import Suite

    load_all_methods()
    cfg = cfg_with(f"suite={suite}")
    floors = {n for n in METHODS.names() if METHODS.get(n).floor}
    run = Suite.from_config(cfg.suite).methods or list(cfg.method)  # None: every configured method
    names = {cfg.method[k].name for k in run}
    assert floors and floors <= names, f"suite {suite} runs no {sorted(floors - names)}"


def test_a_run_folder_written_before_newer_options_still_validates():
    """`diffbench report OLD_RUN` rescores a folder whose config.yaml predates options added since (here the
    floors' causal seeds and the run's thread count): they take their defaults instead of failing the check."""
    from diffbench.harness.schema import check_config
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(cfg_with(), resolve=True)
    del old["scoring"]["strong"]["floor_max_seeds"], old["threads"]
    check_config(old)
    with pytest.raises(ConfigError, match="threads='many'"):
        check_config({**old, "threads": "many"})


@pytest.mark.parametrize("override, words", [
    ("plant.steps=abc", "plant.steps must be an integer"),
    ("+plant.foo=1", "plant.foo is not a known option"),
    ("+plant.gate.organism_t_min=0.5", "plant.gate.organism_t_min is not a known option"),
    ("+stages_=[plant]", "stages_ is not a known option"),
    ("device=gpu", "device='gpu' is not one of its choices"),
    ("dtype=half", "dtype='half' is not one of its choices"),
    ("collect.layers=[0.5,abc]", "collect.layers[1] must be a number"),
    ("+suite.extra=1", "suite.extra is not a known option"),
    ("suite.n_probes=many", "suite.n_probes must be an integer"),
    ("scoring.alpha=high", "scoring.alpha must be a number"),
    ("+scoring.strong.kk=3", "scoring.strong"),
    ("+suite.corpus.tokenz=4", "suite.corpus.tokenz is not a known option"),
    ("+suite.cross._target_=os.system", "config is data, not code"),
])
def test_bad_keys_and_types_are_one_clear_error_before_any_work(override, words, tmp_path):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        Workspace(cfg_with(override, tmp=str(tmp_path)), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was written


def test_unknown_method_params_fail_before_planting(tmp_path):
    from omegaconf import open_dict

    cfg = cfg_with("suite=tiny", "model=tiny-llama", tmp=str(tmp_path))
    with open_dict(cfg):
        cfg.method["l1_crosscoder"]["params"]["stpes"] = 10
    with pytest.raises(ValueError, match="l1_crosscoder.*stpes"):
        Workspace(cfg, tmp_path)
