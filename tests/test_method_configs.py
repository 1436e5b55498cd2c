"""Each method's options live in one typed dataclass; conf/method/*.yaml holds overrides only, so the two cannot drift."""

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from diffbench.harness.cli import method_overrides
from diffbench.methods import load_all_methods
from diffbench.core import METHODS, MethodConfig

load_all_methods()
CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
SHIPPED = sorted(p.stem for p in CONF.glob("*.yaml"))


def entry(name: str) -> dict:
    (key, value), = yaml.safe_load((CONF / f"{name}.yaml").read_text()).items()
    assert key == name
    return value


@pytest.mark.parametrize("name", SHIPPED)
def test_yaml_holds_overrides_only(name):
    """A YAML value equal to the dataclass default would be a second home of that default (and could drift)."""
    e = entry(name)
    cls = METHODS.get(e["name"])
    assert is_dataclass(cls.Config) and issubclass(cls.Config, MethodConfig) and cls.Config is not MethodConfig
    defaults = {f.name: getattr(cls.Config(), f.name) for f in fields(cls.Config)}
    for key, value in (e.get("params") or {}).items():
        assert key in defaults, f"{name}.yaml sets {key}, which {cls.Config.__name__} does not have"
        assert value != defaults[key], f"{name}.yaml repeats the default of {key}; delete it there"


def test_every_registered_method_has_its_own_config():
    for name in METHODS.names():
        if name.startswith(("test_", "outside_", "ep_")):
            continue
        assert METHODS.get(name).Config is not MethodConfig, name


@pytest.mark.parametrize("params, words", [
    ({"stpes": 10}, "unknown config key(s) ['stpes']"),
    ({"steps": "ten"}, "steps='ten' does not fit"),
    ({"flag_b": True}, "flag_b=True does not fit"),
    ({"backend": "cuda"}, "backend='cuda' does not fit"),
])
def test_unknown_or_ill_typed_options_are_one_clear_error(params, words):
    with pytest.raises(TypeError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        METHODS.get("batchtopk_crosscoder")(**params)


def test_ints_pass_for_floats_and_lists_for_tuples():
    m = METHODS.get("mean_diff")(positions=[2, 6], flag_threshold=1)
    assert m.positions == (2, 6) and m.cfg.flag_threshold == 1


def test_command_line_overrides_reach_the_dataclass():
    from hydra import compose, initialize_config_module

    argv = method_overrides(["method=[dfc]", "method.dfc.params.steps=7"])
    assert argv == ["method=[dfc]", "++method.dfc.params.steps=7"]
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=argv)
    params = dict(cfg.method.dfc.params)
    assert METHODS.get("dfc")(**params).cfg.steps == 7 and METHODS.get("dfc")().cfg.steps == 400
