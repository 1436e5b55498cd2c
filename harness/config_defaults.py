"""The config groups whose defaults live in a dataclass: `collect` (harness/data/config.py's CollectConfig) and
`scoring` (harness/score/config.py's ScoringConfig). Each is registered with Hydra's ConfigStore as the group's
`default` option, built from the dataclass itself, so conf/config.yaml and conf/diff.yaml compose them like any other
group, overrides such as `scoring.bootstrap=200` work, and no YAML file repeats a default."""

from __future__ import annotations

from dataclasses import asdict

from hydra.core.config_store import ConfigStore

from .data.config import CollectConfig
from .score.config import ScoringConfig


def register() -> None:
    store = ConfigStore.instance()
    scoring = asdict(ScoringConfig())
    scoring["ks"] = list(scoring["ks"])
    store.store(group="scoring", name="default", node=scoring, provider="diffbench")
    store.store(group="collect", name="default", node=asdict(CollectConfig()), provider="diffbench")
