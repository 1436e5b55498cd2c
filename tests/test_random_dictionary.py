"""The random-dictionary floor: an untrained BatchTopK crosscoder, on the tiny model pair of test_crosscoder.

The pair is test_crosscoder's `tiny_pair` (tiny-llama vs a copy with block 1's MLP perturbed, the same texts,
layer 2), rebuilt here under the session's model cache: test_crosscoder's fixture points DIFFBENCH_CACHE at a
fresh directory, so importing it would convert the tiny model (~20 s) once more in a full run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffbench.core import METHODS, load_findings, save_findings
from diffbench.methods.crosscoder._lib.batchtopk_base import BatchTopKBase
from diffbench.methods.crosscoder.batchtopk import BatchTopKCrosscoder
from diffbench.methods.crosscoder._lib.module import Crosscoder
from diffbench.methods.crosscoder._lib.train import init_from_data
from diffbench.methods.crosscoder.random_dictionary import RandomDictionary
from sentences import SENTENCES  # tests/sentences.py
from tiny_pairs import perturbed_pair
from test_crosscoder import SMALL

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
RD_SMALL = {k: v for k, v in SMALL.items() if k != "steps"} | {"k": 8}  # the same width / k / data as BatchTopK's
PER_LATENT = {"latent", "section", "fires_eval", "freq_train", "rel_norm", "nu_r", "nu_eps",
              "beta_r_a", "beta_r_b", "beta_eps_a", "beta_eps_b"}


def test_registered_floor_and_stochastic():
    from diffbench.methods import load_all_methods

    load_all_methods()
    cls = METHODS.get("random_dictionary")
    assert cls is RandomDictionary and issubclass(cls, BatchTopKBase) and issubclass(BatchTopKCrosscoder, BatchTopKBase)
    assert cls.floor and cls.stochastic
    assert not BatchTopKCrosscoder.floor
    # BatchTopK's configuration (so its initialisation, threshold and selection rule) except the steps
    assert {k: v for k, v in cls().config.items() if k != "steps"} == {k: v for k, v in BatchTopKCrosscoder().config.items() if k != "steps"}
    assert cls(**RD_SMALL).cfg.steps == 0
    with pytest.raises(ValueError, match="no gradient steps"):
        cls(steps=10)


def test_conf_matches_batchtopk_width_k_and_readout():
    rd = OmegaConf.to_container(OmegaConf.load(CONF / "random_dictionary.yaml"))["random_dictionary"]
    btk = OmegaConf.to_container(OmegaConf.load(CONF / "batchtopk_crosscoder.yaml"))["batchtopk_crosscoder"]
    assert rd["name"] == "random_dictionary"
    method = RandomDictionary(**rd["params"])  # every key is a known parameter
    cfg_btk = BatchTopKCrosscoder(**btk["params"]).cfg
    for key in ("layer", "dict_size", "k", "batch_size", "max_tokens", "flag_a", "flag_b", "nu_r_max", "nu_eps_max",
                "max_findings", "backend", "score_norm", "data_init_frac", "lr_width", "threshold_calib_frac",
                "threshold_refit_rows", "threshold_rule", "threshold_l0_span"):
        assert getattr(method.cfg, key) == getattr(cfg_btk, key), key
    assert method.cfg.steps == 0


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """test_crosscoder.tiny_pair, with the models from the session cache."""
    return perturbed_pair(tmp_path_factory.mktemp("rd"), SENTENCES)


@pytest.fixture(scope="module")
def runs(tiny_pair):
    """random_dictionary with seeds 0, 0, 1 and a (40-step) trained batchtopk_crosscoder, same width and k."""
    ctx = tiny_pair
    out = {}
    for key, seed in (("rd0", 0), ("rd0_again", 0), ("rd1", 1)):
        m = RandomDictionary(**RD_SMALL)
        out[key] = (m, m.find(dataclasses.replace(ctx, seed=seed)))
    m = BatchTopKCrosscoder(**SMALL, k=8)
    out["btk"] = (m, m.find(ctx))
    return out


def test_findings_have_the_batchtopk_form(tiny_pair, runs, tmp_path):
    ctx = tiny_pair
    method, findings = runs["rd0"]
    _, btk_findings = runs["btk"]
    assert findings and len(findings) <= RD_SMALL["max_findings"] and btk_findings
    u = [f.uniqueness for f in findings]
    assert u == sorted(u, reverse=True)
    la, lb = ctx.corpus.load(2)
    cc, data = method.crosscoder, method.data
    keep = la.pos > 0
    with torch.no_grad():
        codes = cc.encode([la.acts[keep] * data.scales[0], lb.acts[keep] * data.scales[1]], "threshold")
    ref = btk_findings[0]
    for f in findings:
        r = f.readout
        form = (r.kind, r.act, r.input_norm)
        assert form == (ref.readout.kind, ref.readout.act, ref.readout.input_norm) == ("linear", "relu", "none")
        assert r.layer_a == r.layer_b == f.direction_layer == 2 and f.side in ("a", "b")
        assert r.w_a.shape == r.w_b.shape == ref.readout.w_a.shape == (64,)  # reads both models
        assert f.direction.shape == ref.direction.shape == (64,)
        assert math.isfinite(r.threshold) and r.threshold > 0  # the refit BatchTopK threshold / decoder norm
        assert len(f.tokens) == len(f.token_ids) == 20
        assert f.id.startswith("random_dictionary:tiny:L2:latent")
        assert PER_LATENT <= set(f.info) and PER_LATENT <= set(ref.info)
        assert all(isinstance(v, (float, str)) for v in f.info.values())
        # the readout on raw activations is the random crosscoder's own (thresholded) code for the latent
        scores = r(la.acts, lb.acts)
        assert torch.allclose(scores[keep], codes[:, int(f.info["latent"])], atol=1e-3, rtol=1e-3)
    # random unit decoder rows in both models: relative norm 0.5, so the relative-norm rule flags nothing
    assert all(abs(f.info["rel_norm"] - 0.5) < 1e-4 for f in findings) and not any(f.flagged for f in findings)
    save_findings(tmp_path / "f", findings, {"method": "random_dictionary"})
    loaded, _ = load_findings(tmp_path / "f")
    assert [f.id for f in loaded] == [f.id for f in findings]


def test_no_training_seeded_and_deterministic(runs):
    method, _ = runs["rd0"]
    cc, data = method.crosscoder, method.data
    fresh = Crosscoder(data.widths, RD_SMALL["dict_size"], seed=0)  # BatchTopK's initialisation for seed 0
    init_from_data(fresh, data.train, seed=0, data_frac=BatchTopKCrosscoder().cfg.data_init_frac)
    for name, p in fresh.state_dict().items():
        if name != "threshold":
            assert torch.equal(cc.state_dict()[name], p), name
    assert torch.count_nonzero(cc.b_enc) == 0
    for w in cc.W_dec:
        assert torch.allclose(w.norm(dim=1), torch.ones(cc.n))
    assert math.isfinite(float(cc.threshold)) and float(cc.threshold) > 0
    m = method.last_metrics
    assert m["steps"] == 0 and m["tokens_seen"] == 0 and m["final_loss"] is None
    assert m["l0"] > 0 and m["threshold"] == pytest.approx(float(cc.threshold))
    # same seed: same weights, threshold and findings; another seed: another dictionary
    again, f_again = runs["rd0_again"]
    for name, p in cc.state_dict().items():
        assert torch.equal(again.crosscoder.state_dict()[name], p), name
    assert [(f.id, f.uniqueness) for f in runs["rd0"][1]] == [(f.id, f.uniqueness) for f in f_again]
    other = runs["rd1"][0].crosscoder
    assert not torch.allclose(other.W_enc[0], cc.W_enc[0]) and not torch.allclose(other.W_dec[1], cc.W_dec[1])


def test_reconstructs_worse_than_trained_and_writes_metrics(tiny_pair, runs):
    rd, btk = runs["rd0"][0].last_metrics, runs["btk"][0].last_metrics
    assert rd["dict_size"] == btk["dict_size"] and rd["k"] == btk["k"]
    for side in ("ev_a", "ev_b"):  # held out; measured: random about -0.19, trained (40 steps) about 0.21
        assert rd[side] < btk[side] - 0.2, (rd, btk)
    saved = json.loads((tiny_pair.work_dir / "random_dictionary-tiny-seed0.metrics.json").read_text())
    assert saved["ev_a"] == pytest.approx(rd["ev_a"]) and saved["steps"] == 0 and "history" in saved
