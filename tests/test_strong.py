"""The causal channel on a tiny model whose answer is known by construction.

Model B is model A plus a fixed vector alpha * v added to the residual stream at the last residual
index, at every position, with v the unembedding direction of " zebra": B says "zebra" after every
prompt, A never does. So v must be a strong hit (adding it to A makes the behavior appear, projecting
it out of B makes it disappear), and a random direction must not be.
"""

from __future__ import annotations

import pytest
import torch

from diffbench.harness.score.config import StrongConfig
from diffbench.harness.score.strong import StrongCache, strong_hits
from diffbench.tasks.detectors import RegexDetector

from sentences import SENTENCES


def load():
    from diffbench.harness.models import load_model

    return load_model("tiny-llama", dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def zebra_pair():
    ma, mb = load(), load()
    layer = ma.n_layers - 1
    zebra = ma.tokenizer(" zebra", add_special_tokens=False).input_ids[0]
    w_u = ma.model.get_output_embeddings().weight.detach()
    v = w_u[zebra] - w_u.mean(0)
    v = v / v.norm()
    # construction check: under the logit lens, v's top token is zebra (with a margin)
    top2 = (w_u @ v).topk(2)
    assert int(top2.indices[0]) == zebra and float(top2.values[0] - top2.values[1]) > 0.01
    alpha = 50.0 * float(ma.model.get_input_embeddings().weight.norm(dim=1).mean())

    def add(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + alpha * v.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    mb.decoder_layers()[layer - 1].register_forward_hook(add)
    mb.identity += "-zebra"
    return ma, mb, layer, v, alpha


def test_planted_direction_is_a_strong_hit_and_a_random_one_is_not(zebra_pair, tmp_path):
    ma, mb, layer, v, alpha = zebra_pair
    cfg = StrongConfig(k=5, n_prompts=4, max_new_tokens=4, null_draws=99, alpha=0.05, batch_size=128)
    g = torch.Generator().manual_seed(3)
    rand = torch.randn(v.shape[0], generator=g)
    cands = {"planted": (layer, v * 3.0), "random": (layer, rand)}  # any norm: every direction is rescaled
    cache = StrongCache(tmp_path / "s.json", {"test": 1})
    res = strong_hits(ma, mb, SENTENCES[:4], RegexDetector("zebra"), cands, lambda _l: alpha, cfg, cache, seed=0)
    hit, miss = res["planted"], res["random"]
    assert hit.steer == 1.0 and hit.ablate == 1.0 and hit.match and hit.null_drawn == 99
    assert hit.p == pytest.approx(1 / 100)  # no random direction reproduces it: p = 1 / (draws + 1) <= alpha / k
    assert miss.delta < cfg.min_change and not miss.match
    # cached: a rescore reads the deltas and the null back without generating
    again = strong_hits(ma, mb, SENTENCES[:4], lambda _r: (_ for _ in ()).throw(AssertionError("generated")), cands,
                        lambda _l: alpha, cfg, StrongCache(tmp_path / "s.json", {"test": 1}), seed=0)
    assert again["planted"] == hit


def test_null_is_skipped_where_nothing_reaches_min_change(zebra_pair, tmp_path):
    ma, _, layer, v, alpha = zebra_pair
    cfg = StrongConfig(k=5, n_prompts=2, max_new_tokens=2, null_draws=99, alpha=0.05)
    g = torch.Generator().manual_seed(5)
    cands = {i: (layer, torch.randn(v.shape[0], generator=g)) for i in range(3)}
    res = strong_hits(ma, ma, SENTENCES[:2], RegexDetector("zebra"), cands, lambda _l: alpha, cfg,
                      StrongCache(tmp_path / "n.json", {}), seed=0)
    assert all(r.null_drawn == 0 and not r.match and r.ablate == 0 for r in res.values())


def test_an_ablation_that_changes_the_controls_too_is_not_counted(zebra_pair, tmp_path):
    """Model B says zebra after every prompt, so projecting v out changes the control prompts' answers as much as the
    trigger prompts': with the steer arm switched off (scale 0), v is an ablation-only hit without the specificity
    condition and no hit with it. On model A, which never says zebra, the same ablation changes nothing."""
    ma, mb, layer, v, _ = zebra_pair
    base = dict(k=5, n_prompts=4, max_new_tokens=4, null_draws=99, alpha=0.05, batch_size=128)
    trig, ctrl = SENTENCES[:4], SENTENCES[4:8]
    cands = {"v": (layer, v)}
    plain = strong_hits(ma, mb, trig, RegexDetector("zebra"), cands, lambda _l: 0.0, StrongConfig(**base, max_collateral=None),
                        StrongCache(tmp_path / "plain.json", {}), seed=0, controls=ctrl)["v"]
    assert plain.steer == 0.0 and plain.ablate == 1.0 and plain.match and plain.collateral is None  # not measured
    cfg = StrongConfig(**base, max_collateral=0.25)
    checked = strong_hits(ma, mb, trig, RegexDetector("zebra"), cands, lambda _l: 0.0, cfg,
                          StrongCache(tmp_path / "checked.json", {}), seed=0, controls=ctrl)["v"]
    assert checked.ablate == 1.0 and checked.collateral == 1.0 and not checked.match
    # the measure itself: the same ablation on model A leaves its continuations alone
    from diffbench.harness.score.strong import _collateral

    assert _collateral(ma, ctrl, layer, v[None], cfg, False).tolist() == [0.0]
    assert _collateral(mb, ctrl, layer, v[None], cfg, False).tolist() == [1.0]
    # cached: a rescore reads the collateral back without generating
    again = strong_hits(ma, mb, trig, lambda _r: (_ for _ in ()).throw(AssertionError("generated")), cands, lambda _l: 0.0,
                        cfg, StrongCache(tmp_path / "checked.json", {}), seed=0, controls=ctrl)["v"]
    fields = lambda r: (r.steer, r.ablate, r.match, r.collateral, r.null_drawn)  # p is nan: below min_change, no null
    assert fields(again) == fields(checked)
