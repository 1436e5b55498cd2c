"""The Delta-Crosscoder (methods/crosscoder/delta.py): its loss term, its reduction to the BatchTopK crosscoder, a
planted difference direction, and the method end to end on the tiny pair."""

from __future__ import annotations

import pytest
import torch

from diffbench.core import METHODS, NotApplicableError, validate_findings
from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss
from diffbench.methods.crosscoder._lib.method import relative_norms
from diffbench.methods.crosscoder._lib.module import Crosscoder, Ops
from diffbench.methods.crosscoder._lib.train import TrainConfig, init_from_data, train
from diffbench.methods.crosscoder.delta import DeltaCrosscoder, DeltaCrosscoderConfig, DeltaLoss, delta_term
from test_crosscoder import tiny_pair  # noqa: F401  (the fixture: tiny-llama vs a perturbed copy)


def test_delta_term_by_hand():
    xa = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xb = torch.tensor([[2.0, 1.0], [0.0, 3.0]])  # B - A = [[1, 1], [0, 2]]
    ha = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    hb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # B^ - A^ = [[0, 0], [0, 1]]
    # (B - A) - (B^ - A^) = [[1, 1], [0, 1]]: squared row norms 2 and 1, mean 1.5
    assert float(delta_term([xa, xb], [ha, hb])) == pytest.approx(1.5)
    stats: dict = {}
    assert float(DeltaLoss(0.5, log=True)([xa, xb], [ha, hb], stats)) == pytest.approx(0.75)
    assert stats["delta"] == pytest.approx(1.5)


def _loss(cc, xs, extra):
    cfg = TrainConfig(k=4, steps=100, extra_loss=extra)
    return _batchtopk_loss(cc, xs, cfg, Ops("torch", False), None, 8, 0, {})[0]


def test_loss_is_batchtopk_plus_lambda_times_the_delta_term():
    """On one batch: lambda = 0 is the BatchTopK loss bit for bit, and lambda adds lambda x the hand-written term on
    the crosscoder's own reconstructions."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)]
    cc = Crosscoder([8, 8], n_shared=16, seed=0)
    plain = _loss(cc, xs, None)
    assert torch.equal(_loss(cc, xs, DeltaLoss(0.0)), plain)
    with torch.no_grad():
        f = cc.encode(xs, "batchtopk", k=4)
        xhat = cc.decode(f)
    expect = ((xs[1] - xs[0]) - (xhat[1] - xhat[0])).pow(2).sum(1).mean()
    assert float((_loss(cc, xs, DeltaLoss(2.5)) - plain).detach()) == pytest.approx(2.5 * float(expect), rel=1e-4)


def test_planted_difference_gets_a_b_exclusive_latent():
    """48 features in superposition in 32 dims, and B = A + a planted unit direction on 10% of the rows: a latent
    with B-exclusive decoder norm (r >= 0.9) is that direction. (Seeds 0-15: 16 of 16 with the delta term, 12 of 16
    without it.)"""
    g = torch.Generator().manual_seed(0)
    n, d, nf = 4000, 32, 48
    acts = (torch.rand(n, nf, generator=g) < 0.04) * (0.5 + torch.rand(n, nf, generator=g))
    feats = torch.nn.functional.normalize(torch.randn(nf, d, generator=g), dim=1)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    xa = acts @ feats * 5 + 0.02 * torch.randn(n, d, generator=g)
    planted = (torch.rand(n, generator=g) < 0.1).float()[:, None] * (3 + torch.rand(n, 1, generator=g))
    xs = [xa, xa + planted * u]
    cc = Crosscoder([d, d], n_shared=64, seed=0)
    init_from_data(cc, xs, seed=0, data_frac=0.0)
    train(cc, xs, TrainConfig(k=4, steps=400, batch_size=128, lr=5e-3, threads="auto",
                              extra_loss=DeltaLoss(1.0)))
    r = relative_norms(cc)
    cos = torch.nn.functional.cosine_similarity(cc.dense_decoder(1), u[None], dim=1)
    b_only = r >= 0.9
    assert b_only.any(), r
    assert float(cos[b_only].max()) > 0.9, (r, cos)


def test_registers_and_config_validates():
    cls = METHODS.get("delta_crosscoder")
    assert cls is DeltaCrosscoder and cls.Config is DeltaCrosscoderConfig and not cls.cross_architecture
    assert cls().cfg.delta_coeff == 1.0 and cls(delta_coeff=0.25).cfg.delta_coeff == 0.25
    with pytest.raises(TypeError, match="unknown config"):
        cls(delta_cofe=1.0)
    with pytest.raises(TypeError, match="does not fit"):
        cls(delta_coeff="big")



def test_not_applicable_without_a_shared_space():
    class CrossArchitecture:  # what find() reads before the check
        seed, device = 0, "cpu"

        def require_shared_space(self, what):
            raise NotApplicableError(f"{what} needs a shared activation space")

    with pytest.raises(NotApplicableError, match="Delta-Crosscoder"):
        METHODS.get("delta_crosscoder")().find(CrossArchitecture())


SMALL = dict(dict_size=64, steps=40, batch_size=64, max_tokens=2000, max_findings=10, eval_frac=0.25, k=8)


def test_findings_are_valid_on_the_tiny_pair(tiny_pair):
    method = METHODS.get("delta_crosscoder")(**SMALL)
    findings = method.find(tiny_pair)
    assert findings and len(findings) <= SMALL["max_findings"]
    validate_findings(findings, tiny_pair)
    m = method.last_metrics
    assert 0.0 < m["ev_a"] <= 1.0 and 0.0 < m["ev_b"] <= 1.0 and m["ev_delta"] <= 1.0
    assert (tiny_pair.work_dir / "delta_crosscoder-tiny-seed0.metrics.json").exists()


def test_lambda_zero_trains_the_batchtopk_dictionary(tiny_pair):
    delta = METHODS.get("delta_crosscoder")(delta_coeff=0.0, **SMALL)
    fd = delta.find(tiny_pair)
    btk = METHODS.get("batchtopk_crosscoder")(**SMALL)
    fb = btk.find(tiny_pair)
    sd, sb = delta.crosscoder.state_dict(), btk.crosscoder.state_dict()
    assert sd.keys() == sb.keys() and all(torch.equal(sd[k], sb[k]) for k in sd)
    assert [(f.info["latent"], f.side, f.uniqueness, f.flagged) for f in fd] == \
           [(f.info["latent"], f.side, f.uniqueness, f.flagged) for f in fb]
