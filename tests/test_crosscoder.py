"""Crosscoder methods on synthetic data (fast, CPU, torch backend) and end to end on a tiny model pair."""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.core import METHODS, Finding, Readout, load_findings, save_findings
from diffbench.methods.crosscoder._lib import reference as R
from diffbench.methods.crosscoder.batchtopk import BatchTopKCrosscoder
from diffbench.methods.crosscoder._lib.method import PairData, relative_norms
from diffbench.methods.crosscoder.l1 import L1Crosscoder
from diffbench.methods.crosscoder._lib.module import Crosscoder, Ops
from diffbench.methods.crosscoder._lib.train import (TrainConfig, fit_threshold, init_from_data, quantile_threshold,
                                                        reconstruction_at, split_calibration, train)
from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss
from diffbench.methods.crosscoder._lib.evaluate import evaluate
from diffbench.methods.crosscoder._lib.scaling import latent_scaling
from sentences import SENTENCES  # tests/sentences.py
from tiny_pairs import perturbed_pair


def synth(n_tokens=3000, widths=(24, 24), n_shared=12, n_a=0, n_b=1, p=0.1, seed=0, noise=0.02, strength=None):
    """Sparse features with a random direction per model; `strength[m][f]` scales feature f in model m.

    A-only features (after the shared ones) are absent from B and B-only features (last) from A.
    """
    g = torch.Generator().manual_seed(seed)
    nf = n_shared + n_a + n_b
    acts = (torch.rand(n_tokens, nf, generator=g) < p) * (0.5 + torch.rand(n_tokens, nf, generator=g))
    dirs, xs = [], []
    for m, d in enumerate(widths):
        u = torch.randn(nf, d, generator=g)
        u = u / u.norm(dim=1, keepdim=True)
        s = torch.ones(nf)
        if m == 0:
            s[n_shared + n_a:] = 0
        else:
            s[n_shared:n_shared + n_a] = 0
        if strength is not None:
            s = s * torch.as_tensor(strength[m], dtype=torch.float32)
        dirs.append(u)
        xs.append(acts @ (u * s[:, None]) * 5 + noise * torch.randn(n_tokens, d, generator=g))
    return xs, dirs


def best_latent(cc: Crosscoder, m: int, direction: torch.Tensor) -> int:
    cos = torch.nn.functional.cosine_similarity(cc.dense_decoder(m), direction[None], dim=1)
    return int(cos.argmax())


class FakeCtx:
    """Just enough of a PairContext for `select`: a pair id and a logit lens."""

    pair_id = "synthetic"
    seed = 0

    def logit_lens(self, vec, side="b", k=20):
        return list(range(k)), [f"t{i}" for i in range(k)]

    def logit_lens_many(self, vecs, side="b", k=20):
        return [self.logit_lens(v, side, k) for v in vecs]


def _metrics(cc, xs, mode):
    ev = evaluate(cc, xs, mode)
    return {"ev_a": ev["ev_a"], "ev_b": ev["ev_b"], "l0": ev["l0"], "dead_frac": ev["dead_frac"],
            "train_tokens": xs[0].shape[0], "backend": "torch",
            "_fires_eval": ev["fires"], "_fires_train": ev["fires"], "_n_train_sample": ev["n_tokens"]}


# ----------------------------------------------------------------------------- DFC partition


def _train_dfc(widths=(48, 64), steps=150, seed=0):
    torch.manual_seed(seed)
    xs, _ = synth(n_tokens=3000, widths=widths, n_shared=16, n_a=3, n_b=3, seed=seed)
    cc = Crosscoder(widths, n_shared=48, n_excl_a=8, n_excl_b=8, seed=seed)
    init_from_data(cc, xs, seed=seed)
    cfg = TrainConfig(sparsity="batchtopk", k=6, aux_k=8, steps=steps, batch_size=128, lr=5e-3, dead_tokens=1000,
                      threads="auto")
    train(cc, xs, cfg)
    return cc, xs


@pytest.fixture(scope="module")
def dfc_trained():
    return _train_dfc()


def test_dfc_forbidden_weights_are_structurally_absent(dfc_trained):
    cc, _ = dfc_trained
    a, s, b = cc.section_slice("a"), cc.section_slice("shared"), cc.section_slice("b")
    # model A's weights cover A-exclusive + shared latents only; model B's shared + B-exclusive only
    assert cc.W_enc[0].shape == cc.W_dec[0].shape == (8 + 48, 48)
    assert cc.W_enc[1].shape == cc.W_dec[1].shape == (48 + 8, 64)
    assert sum(p.numel() for p in cc.parameters()) == 2 * (56 * 48 + 56 * 64) + 64 + 48 + 64
    # the effective dense matrices are exactly zero where a latent may not read or write a model
    for m, forbidden in ((0, b), (1, a)):
        assert torch.count_nonzero(cc.dense_encoder(m)[forbidden]) == 0
        assert torch.count_nonzero(cc.dense_decoder(m)[forbidden]) == 0
    for m, allowed in ((0, a), (0, s), (1, s), (1, b)):
        assert torch.count_nonzero(cc.dense_decoder(m)[allowed]) > 0  # and trained elsewhere


def test_dfc_exclusive_latent_never_touches_the_other_model(dfc_trained):
    cc, xs = dfc_trained
    xb = [x[:64] for x in xs]
    with torch.no_grad():
        # decoding: bump an A-exclusive latent -> B's reconstruction is bit-identical, A's changes
        f = cc.encode(xb, "batchtopk", k=6)
        f2 = f.clone()
        f2[:, 2] += 5.0  # latent 2 is A-exclusive
        (xa1, xb1), (xa2, xb2) = cc.decode(f), cc.decode(f2)
        assert torch.equal(xb1, xb2) and not torch.equal(xa1, xa2)
        code = R.dense_to_code(f2)
        sa, sb = R.sparse_decode(code, f2[code.rows, code.cols], list(cc.W_dec), cc.ranges, list(cc.b_dec))
        assert torch.allclose(sb, xb1, atol=1e-5)
        # encoding: model B's activations do not reach A-exclusive latents (and vice versa)
        z = cc.preacts(xb)
        z_b_changed = cc.preacts([xb[0], xb[1] + torch.randn_like(xb[1])])
        z_a_changed = cc.preacts([xb[0] + torch.randn_like(xb[0]), xb[1]])
        assert torch.equal(z[:, cc.section_slice("a")], z_b_changed[:, cc.section_slice("a")])
        assert torch.equal(z[:, cc.section_slice("b")], z_a_changed[:, cc.section_slice("b")])
        assert not torch.equal(z[:, cc.section_slice("shared")], z_b_changed[:, cc.section_slice("shared")])


def test_dfc_aux_loss_cannot_write_other_models_exclusive_rows(dfc_trained):
    cc, xs = dfc_trained
    xb = [x[:128] for x in xs]
    cfg = TrainConfig(sparsity="batchtopk", k=6, aux_k=16, aux_coeff=1.0, steps=1)
    ops = Ops("torch")

    def grads(dead):
        cc.zero_grad(set_to_none=True)
        loss, _ = _batchtopk_loss(cc, xb, cfg, ops, dead, 16, 0, {})
        loss.backward()
        return {n: p.grad.clone() for n, p in cc.named_parameters()}

    everything_dead = torch.ones(cc.n, dtype=torch.bool)
    main, total = grads(None), grads(everything_dead)
    aux = {n: total[n] - main[n] for n in main}  # the auxiliary loss's own gradient
    assert aux["W_dec.0"].abs().sum() > 0 and aux["W_dec.1"].abs().sum() > 0
    # the aux loss does write A's own exclusive rows ...
    a_rows = slice(0, 8)  # A-exclusive latents are rows 0..7 of model A's decoder
    assert aux["W_dec.0"][a_rows].abs().sum() > 0
    # ... and the dense view of model B's decoder gradient is zero on them (B has no such rows)
    dense_gb = torch.zeros(cc.n, 64)
    dense_gb[cc.ranges[1][0]:cc.ranges[1][1]] = aux["W_dec.1"]
    dense_ga = torch.zeros(cc.n, 48)
    dense_ga[cc.ranges[0][0]:cc.ranges[0][1]] = aux["W_dec.0"]
    assert torch.count_nonzero(dense_gb[cc.section_slice("a")]) == 0
    assert torch.count_nonzero(dense_ga[cc.section_slice("b")]) == 0
    # optimiser state can only exist for parameters, so it has no entries for forbidden weights either
    opt = torch.optim.Adam(cc.parameters())
    cc.zero_grad(set_to_none=True)
    _batchtopk_loss(cc, xb, cfg, ops, everything_dead, 16, 0, {})[0].backward()
    opt.step()
    shapes = sorted(tuple(st["exp_avg"].shape) for st in opt.state.values())
    assert shapes == sorted(tuple(p.shape) for p in cc.parameters())
    cc.zero_grad(set_to_none=True)


def test_dfc_different_widths_trains_and_reconstructs(dfc_trained):
    cc, xs = dfc_trained
    assert math.isfinite(float(cc.threshold))
    ev = evaluate(cc, xs, "threshold")
    assert ev["ev_a"] > 0.5 and ev["ev_b"] > 0.5, ev
    ev_topk = evaluate(cc, xs, "batchtopk", k=6)
    assert ev_topk["ev_a"] > 0.5 and ev_topk["ev_b"] > 0.5


# ----------------------------------------------------------------------------- inference threshold


def test_quantile_threshold_gives_l0_k_on_its_rows():
    """The estimator is the (k*N)-th largest score over its N rows: inference L0 on those rows is k (ties aside),
    also with a chunk size that splits the rows unevenly."""
    torch.manual_seed(0)
    xs, _ = synth(n_tokens=1500, widths=(24, 32), n_shared=16, seed=1)
    cc = Crosscoder((24, 32), n_shared=96, seed=0)
    init_from_data(cc, xs, seed=0)
    for k, chunk in ((4, 1024), (10, 333)):
        t = quantile_threshold(cc, xs, k, chunk=chunk)
        cc.threshold.fill_(t)
        l0 = evaluate(cc, xs, "threshold")["l0"]
        assert abs(l0 - k) <= 0.1 * k, (k, l0)
        assert t == quantile_threshold(cc, xs, k, chunk=4096)


def test_ev_threshold_rule_picks_the_best_reconstruction_within_the_l0_span():
    xs, _ = synth(n_tokens=1500, widths=(24, 24), n_shared=16, seed=3)
    cc = Crosscoder((24, 24), n_shared=64, seed=0)
    init_from_data(cc, xs, seed=0)
    train(cc, xs, TrainConfig(sparsity="batchtopk", k=6, aux_k=8, steps=40, batch_size=128, lr=5e-3,
                              threshold_calib_frac=0.0))
    cfg = TrainConfig(sparsity="batchtopk", k=6, threshold_rule="ev", threshold_l0_span=2.0)
    t = fit_threshold(cc, xs, cfg)
    ts = quantile_threshold(cc, xs, [6 * 2 ** (j / 4) for j in range(-4, 5)])
    evs = reconstruction_at(cc, xs, ts, chunk=500)
    assert t in ts and evs[ts.index(t)] == max(evs)
    for tt, e in zip(ts, evs):  # the sparse scoring is the inference rule's EV
        cc.threshold.fill_(tt)
        ev = evaluate(cc, xs, "threshold")
        assert (ev["ev_a"] + ev["ev_b"]) / 2 == pytest.approx(e, abs=1e-4)
    cc.threshold.fill_(t)
    assert 6 / 2 * 0.9 <= evaluate(cc, xs, "threshold")["l0"] <= 6 * 2 * 1.1
    assert fit_threshold(cc, xs, TrainConfig(k=6, threshold_rule="l0")) == quantile_threshold(cc, xs, 6)


def test_calibration_rows_never_train_and_fit_the_threshold():
    xs, _ = synth(n_tokens=2000, widths=(24, 24), seed=2)
    cfg = TrainConfig(sparsity="batchtopk", k=6, aux_k=8, steps=30, batch_size=64, lr=5e-3, threshold_calib_frac=0.1,
                      threshold_refit_rows=150)
    tr, cal = split_calibration(2000, cfg)
    assert cal.numel() == 150 and tr.numel() == 1850  # 10% = 200, capped at threshold_refit_rows
    assert not set(tr.tolist()) & set(cal.tolist()) and torch.equal(split_calibration(2000, cfg)[1], cal)
    # a training run that only ever sees the training rows: the calibration rows' values cannot matter to the weights
    poisoned = [x.clone() for x in xs]
    for x in poisoned:
        x[cal] = 1e3
    runs = []
    for data in (xs, poisoned):
        cc = Crosscoder((24, 24), n_shared=48, seed=0)
        init_from_data(cc, [x[tr] for x in data], seed=0)
        res = train(cc, data, cfg)
        runs.append(cc)
        assert (res.train_rows, res.calib_rows) == (1850, 150)
    for p, q in zip(runs[0].W_dec, runs[1].W_dec):
        assert torch.equal(p, q)
    # the threshold is the calibration rows' quantile: L0 = k on them
    cc = runs[0]
    cc.threshold.fill_(quantile_threshold(cc, [x[cal] for x in xs], 6))
    assert abs(evaluate(cc, [x[cal] for x in xs], "threshold")["l0"] - 6) <= 0.6
    # no calibration share: fitted on (a subset of) the training rows, which are then all trained on
    res = train(Crosscoder((24, 24), n_shared=48, seed=0), xs, TrainConfig(sparsity="batchtopk", k=6, steps=2,
                batch_size=64, threshold_calib_frac=0.0))
    assert (res.train_rows, res.calib_rows) == (2000, 0)


# ----------------------------------------------------------------------------- Latent Scaling


def _hand_built(rho: float, a_decoder: float = 0.05, n_tokens=2000, seed=0):
    """Orthonormal features e_0..e_7 in 16 dims; latents 0-6 shared, latent 7 = feature 7 with
    d^B = e_7 and a tiny d^A = a_decoder * e_7 (relative norm 0.95: 'B-specific' by the norm rule),
    while model A's activations carry feature 7 at `rho` x B's strength (complete shrinkage)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:8]  # [8, 16] orthonormal rows
    a = (torch.rand(n_tokens, 8, generator=g) < 0.2) * (0.5 + torch.rand(n_tokens, 8, generator=g))
    scale_a = torch.ones(8)
    scale_a[7] = rho
    xs = [(a * scale_a) @ e, a @ e]
    cc = Crosscoder([16, 16], n_shared=8, seed=0)
    with torch.no_grad():
        for m in range(2):
            cc.W_dec[m].copy_(e)
            cc.W_enc[m].copy_(e / 2)
            cc.b_dec[m].zero_()
        cc.W_dec[0][7] = a_decoder * e[7]
        cc.W_enc[0][7] = 0.0  # latent 7 reads model B only
        cc.W_enc[1][7] = e[7]
        cc.b_enc.zero_()
        cc.threshold.fill_(1e-6)
    return cc, xs


def test_latent_scaling_closed_form_on_hand_built_crosscoder():
    cc, xs = _hand_built(rho=0.5)
    out = latent_scaling(cc, xs, torch.tensor([7, 3]), torch.tensor([1, 1]), mode="relu")
    assert out["nu_eps"][0] == pytest.approx(0.5, abs=1e-3)  # A's error still holds half the feature
    assert out["nu_r"][0] == pytest.approx(0.05, abs=1e-3)  # A's reconstruction barely has it
    assert out["beta_eps"][1, 0] == pytest.approx(1.0, abs=1e-3)
    assert out["nu_eps"][1] == pytest.approx(1.0, abs=1e-3) and out["nu_r"][1] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("rho,expect_flag", [(0.5, False), (0.0, True)])
def test_latent_scaling_unflags_latent_present_but_shrunk_in_a(rho, expect_flag):
    cc, xs = _hand_built(rho=rho)
    assert float(relative_norms(cc)[7]) >= 0.9  # the relative-norm rule alone calls latent 7 B-specific
    data = PairData(train=xs, eval=xs, scales=[1.0, 1.0], layer_a=3, layer_b=3, n_dropped_pos0=0, n_dropped_outliers=0)
    ctx = FakeCtx()
    l1 = L1Crosscoder(max_findings=8)
    l1_findings = {int(f.info["latent"]): f for f in l1.select(ctx, cc, data, _metrics(cc, xs, "relu"))}
    assert l1_findings[7].flagged and l1_findings[7].side == "b"
    btk = BatchTopKCrosscoder(max_findings=8)
    found = {int(f.info["latent"]): f for f in btk.select(ctx, cc, data, _metrics(cc, xs, "threshold"))}
    f7 = found[7]
    assert f7.side == "b" and f7.info["rel_norm"] >= 0.9
    assert f7.info["nu_eps"] == pytest.approx(rho, abs=1e-2)
    assert f7.flagged is expect_flag  # nu says: shared (present but shrunk in A) unless rho ~ 0
    if not expect_flag:
        assert f7.uniqueness < l1_findings[7].uniqueness


# ----------------------------------------------------------------------------- L1


def test_l1_crosscoder_flags_b_only_feature():
    torch.manual_seed(0)
    xs, dirs = synth(n_tokens=3000, n_shared=12, n_b=1, seed=1)
    cc = Crosscoder([24, 24], n_shared=32, dec_init_norm=0.1, seed=0)
    init_from_data(cc, xs, seed=0)
    train(cc, xs, TrainConfig(sparsity="l1", l1_coeff=0.5, steps=200, batch_size=128, lr=5e-3, threads="auto"))
    ev = evaluate(cc, xs, "relu")
    assert ev["ev_a"] > 0.8 and ev["ev_b"] > 0.8, ev
    i = best_latent(cc, 1, dirs[1][12])
    r = relative_norms(cc)
    assert r[i] >= 0.9
    data = PairData(train=xs, eval=xs, scales=[1.0, 1.0], layer_a=3, layer_b=3, n_dropped_pos0=0, n_dropped_outliers=0)
    findings = L1Crosscoder(max_findings=50).select(FakeCtx(), cc, data, _metrics(cc, xs, "relu"))
    by_latent = {int(f.info["latent"]): f for f in findings}
    assert by_latent[i].flagged and by_latent[i].side == "b"
    # a shared feature's latent is not flagged
    j = best_latent(cc, 1, dirs[1][0])
    assert 0.2 < r[j] < 0.8 and not by_latent[j].flagged


# ----------------------------------------------------------------------------- end to end


TEXTS = SENTENCES

SMALL = dict(dict_size=64, steps=40, batch_size=64, max_tokens=2000, max_findings=10, eval_frac=0.25)
EXTRA = {"l1_crosscoder": {}, "batchtopk_crosscoder": {"k": 8}, "dfc": {"k": 8, "excl_frac_a": 0.1, "excl_frac_b": 0.1}}


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("xc")
    mp.setenv("DIFFBENCH_CACHE", str(root / "cache"))
    try:
        ctx = perturbed_pair(root, TEXTS)
        yield ctx
    finally:
        mp.undo()


@pytest.mark.parametrize("name", ["l1_crosscoder", "batchtopk_crosscoder", "dfc"])
def test_method_end_to_end_on_tiny_pair(tiny_pair, name, tmp_path):
    ctx = tiny_pair
    method = METHODS.get(name)(**SMALL, **EXTRA[name])
    assert method.stochastic
    findings = method.find(ctx)
    assert findings and len(findings) <= SMALL["max_findings"]
    assert all(isinstance(f, Finding) and isinstance(f.readout, Readout) for f in findings)
    u = [f.uniqueness for f in findings]
    assert u == sorted(u, reverse=True)
    la, lb = ctx.corpus.load(2)
    cc, data = method.crosscoder, method.data
    mode = "relu" if name == "l1_crosscoder" else "threshold"
    keep = la.pos > 0
    with torch.no_grad():
        codes = cc.encode([la.acts[keep] * data.scales[0], lb.acts[keep] * data.scales[1]], mode)
    for f in findings:
        assert f.side in ("a", "b") and f.direction is not None and f.direction.shape == (64,)
        assert f.direction_layer == 2 and len(f.tokens) == 20 and len(f.token_ids) == 20
        for key in ("ev_a", "ev_b", "l0", "dead_frac", "latent", "section"):
            assert key in f.info
        assert all(isinstance(v, (float, str)) for v in f.info.values())
        scores = f.readout(la.acts, lb.acts)
        assert scores.shape == (la.acts.shape[0],) and torch.isfinite(scores).all() and (scores >= 0).all()
        # the readout on raw activations is the crosscoder's own code for that latent
        i = int(f.info["latent"])
        assert torch.allclose(scores[keep], codes[:, i], atol=1e-3, rtol=1e-3)
        if name == "dfc":
            assert f.info["section"] == f.side
            assert (f.readout.w_a is None) == (f.side == "b") and (f.readout.w_b is None) == (f.side == "a")
    m = method.last_metrics
    assert 0.0 < m["ev_a"] <= 1.0 and 0.0 < m["ev_b"] <= 1.0 and m["l0"] > 0
    assert (ctx.work_dir / f"{name}-tiny-seed0.metrics.json").exists()
    save_findings(tmp_path / "f", findings, {"method": name})
    loaded, _ = load_findings(tmp_path / "f")
    assert [f.id for f in loaded] == [f.id for f in findings]


def test_trained_width_is_capped_by_the_training_samples(tiny_pair):
    """A BatchTopK dictionary wider than its steps x batch samples can feed (samples_per_latent) is built at the fed
    width, reports both sizes, and DFC's sections scale with it; samples_per_latent=None and the untrained floor
    (steps = 0) keep dict_size."""
    common = dict(max_tokens=2000, max_findings=5, eval_frac=0.25, k=4, steps=8, batch_size=64)  # 512 samples
    btk = METHODS.get("batchtopk_crosscoder")(dict_size=256, **common)
    assert btk.trained_width() == 512 // 25
    btk.find(tiny_pair)
    assert btk.crosscoder.n == 20 and btk.last_metrics["dict_size"] == 20 and btk.last_metrics["dict_size_requested"] == 256
    dfc = METHODS.get("dfc")(dict_size=256, excl_frac_a=0.1, excl_frac_b=0.1, **common)
    assert dfc.sections(dfc.trained_width()) == (2, 16, 2)
    assert METHODS.get("batchtopk_crosscoder")(dict_size=256, samples_per_latent=None, **common).trained_width() == 256
    assert METHODS.get("batchtopk_crosscoder")(dict_size=16, **common).trained_width() == 16  # narrow: untouched
    assert METHODS.get("random_dictionary")(dict_size=256).trained_width() == 256
    assert METHODS.get("l1_crosscoder")(dict_size=256, steps=8, batch_size=64).trained_width() == 256


def test_unknown_config_key_is_an_error():
    with pytest.raises(TypeError, match="unknown config"):
        METHODS.get("dfc")(dict_sise=10)


def test_batch_topk_selection_is_exact_with_prefilter():
    torch.manual_seed(0)
    s = torch.relu(torch.randn(32, 100))
    full = R.batch_topk(s, 64)
    pre = R.batch_topk(s, 64, prefilter=0.5)  # below the 64th largest: same result, cheaper
    assert torch.equal(full.rows, pre.rows) and torch.equal(full.cols, pre.cols)
    kth = s.flatten().topk(64).values[-1]
    assert torch.all(s[full.rows, full.cols] >= kth) and full.nnz == 64
    dense = full.to_dense(s[full.rows, full.cols], 100)
    assert int((dense > 0).sum()) == 64


def test_large_stores_are_streamed_and_subsampled(tiny_pair, monkeypatch):
    from diffbench.methods.crosscoder._lib import method as common

    monkeypatch.setattr(common, "IN_MEMORY_TOKENS", 10)  # force the shard-streaming path
    data = common.prepare_data(tiny_pair, common.DataOptions.of(common.CrosscoderConfig(max_tokens=100, eval_frac=0.25)))
    assert data.train[0].shape[0] <= 100 and data.train[0].shape == data.train[1].shape
    assert data.eval[0].shape[0] > 0 and data.layer_a == data.layer_b == 2
    mean_norm = data.train[0].norm(dim=1).mean()
    assert abs(float(mean_norm) - 8.0) < 1e-3  # sqrt(64): normalised to the fixed mean norm


def test_compare_crosscoder_prints_no_speed_ratio_between_dictionaries_of_different_built_widths():
    """scripts/compare_crosscoder.py: ours caps the width by its samples, the reference builds every latent; a ratio
    between a 4,096-latent and a 16,384-latent dictionary is refused, one between equal built widths is given."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compare_crosscoder", Path(__file__).parents[1] / "scripts" / "compare_crosscoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ours = {"n": 16384, "trained_width": 4096, "seconds": 10.0}
    ref = {"n": 16384, "seconds": 150.0}
    assert mod.speed_ratio({"ours": ours, "reference": ref}) is None
    assert mod.speed_ratio({"ours": {**ours, "trained_width": 16384}, "reference": ref}) == 15.0
    assert mod.speed_ratio({"ours": ours}) is None
