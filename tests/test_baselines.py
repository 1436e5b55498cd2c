"""Baseline methods (issue 6) on a tiny model with planted changes whose correct answer is known by construction.

* activation plant: model B = model A plus alpha * u added to the residual stream (after block 1,
  i.e. residual index 2, the collected layer) at every position holding the token " zebra", on top
  of a small random perturbation of B's layer-0 MLP (so B differs everywhere a little, like a
  fine-tune; ~2% of the activation norm, against 50% on zebra tokens). pca_diff, diff_norm, diff_sae and dict_drift must find u / the zebra positions.
* weight plant: a rank-1 edit of block 1's q_proj that reads the normalised residual direction in
  which zebra positions differ from the rest, plus a smaller rank-1 edit of block 2's down_proj:
  weight_svd must rank the q_proj edit first with its singular value, its readout must separate
  texts with and without zebra, and the down_proj edit's write direction comes second.
* output plant (the `output_pair` fixture, conftest.py): model B's (untied) unembedding row of " violin" is
  raised along the mean final hidden state: kl_diff and logit_diff_tokens must surface " violin".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from diffbench.methods import load_all_methods
from diffbench.core import METHODS, Finding, NotApplicableError, PairContext, load_findings, save_findings
from diffbench.core.lens import lens_ids

from sentences import NEUTRAL, SENTENCES, with_zebra

load_all_methods()

BASE = SENTENCES
PROBE_T = [with_zebra(s) for s in BASE[16:]]  # held-out zebra variants
PROBE_C = BASE[16:]
LAYER = 2  # the collected (middle) layer of the 4-layer tiny model


def auroc(labels, scores) -> float:
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))


class AddOnToken:
    """Forward hooks on a tiny model: add alpha * u to the output of `block` where the input token is `token_id`."""

    def __init__(self, lm, token_id: int, u: torch.Tensor, alpha: float, block: int = LAYER - 1):
        state = {}

        def pre(_mod, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            state["mask"] = (ids == token_id).unsqueeze(-1)

        def post(_mod, _inp, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h + alpha * state["mask"].to(h.dtype) * u.to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        self.handles = [lm.model.model.register_forward_pre_hook(pre, with_kwargs=True),
                        lm.decoder_layers()[block].register_forward_hook(post)]


def load(name="tiny-llama"):
    from diffbench.harness.models import load_model

    return load_model(name, dtype="fp32", device="cpu")


def make_ctx(ma, mb, root, pair_id, layers=(LAYER,), work_dir=None, texts=NEUTRAL):
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect_pair

    pair = collect_pair(ma, mb, TextSet.of("corpus-test", texts), list(layers), root=root, progress=False)
    return PairContext(pair_id, ma, mb, pair, layers=list(layers), seed=0, work_dir=work_dir)


def probe_scores(finding: Finding, ma, mb, root, texts) -> list[float]:
    """Per-text max of the finding's readout over texts (all positions >= 1), as the scorer computes it."""
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect_pair

    r = finding.readout
    layers = sorted({r.layer_a, r.layer_b})
    pair = collect_pair(ma, mb, TextSet.of("probe-test", texts), layers, root=root, progress=False)
    la, _ = pair.load(r.layer_a)
    _, lb = pair.load(r.layer_b)
    s = r(la.acts, lb.acts)
    s = torch.where(la.pos >= 1, s, torch.full_like(s, float("-inf")))
    return la.per_text_max(s, len(texts)).tolist()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def zebra_id():
    return load().tokenizer(" zebra", add_special_tokens=False).input_ids[0]


# ----------------------------------------------------------------------------- activation plant


@pytest.fixture(scope="module")
def act_pair(tmp_path_factory, zebra_id):
    root = tmp_path_factory.mktemp("act")
    ma, mb = load(), load()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B differs from A a little everywhere, like a fine-tune
        for p in mb.model.model.layers[0].mlp.parameters():
            p.add_(0.002 * torch.randn(p.shape, generator=g))
    u = unit(torch.randn(ma.hidden_size, generator=g))
    la, _ = make_ctx(ma, ma, root / "probe-scale", "scale").corpus.load(LAYER)
    alpha = 0.5 * float(la.acts[la.pos >= 1].norm(dim=1).mean())
    AddOnToken(mb, zebra_id, u, alpha)
    mb.identity += "-zebra"
    ctx = make_ctx(ma, mb, root / "acts", "act", work_dir=root / "work")
    return ctx, u, root


def zebra_rows(ctx, zebra_id):
    la, _ = ctx.corpus.load(LAYER)
    return la, (la.token_id == zebra_id) & (la.pos >= 1)


def test_pca_diff_finds_planted_direction(act_pair, zebra_id):
    ctx, u, root = act_pair
    findings = METHODS.get("pca_diff")().find(ctx)
    assert len(findings) == 20 and [f.uniqueness for f in findings] == sorted((f.uniqueness for f in findings), reverse=True)
    top = findings[0]
    assert abs(cos(top.direction, u)) > 0.95 and top.flagged
    assert top.info["explained_variance"] > 0.5 and len(top.tokens) == 20
    ev = [f.info["explained_variance"] for f in findings]
    assert ev == sorted(ev, reverse=True)
    # oriented towards B: the zebra positions' difference projects positively
    la, z = zebra_rows(ctx, zebra_id)
    _, lb = ctx.corpus.load(LAYER)
    assert float(top.readout(la.acts, lb.acts)[z].mean()) > 0
    s = probe_scores(top, ctx.model_a, ctx.model_b, root / "probe", PROBE_T + PROBE_C)
    assert auroc([1] * 16 + [0] * 16, s) > 0.95
    # mean_diff shares the PCA code: its components are pca_diff's
    md = METHODS.get("mean_diff")(n_pca=3).find(ctx)
    for i in range(3):
        assert torch.allclose(md[1 + i].direction, findings[i].direction, atol=1e-5)


def test_diff_norm_reads_the_planted_positions(act_pair, zebra_id, tmp_path):
    ctx, u, root = act_pair
    (f,) = METHODS.get("diff_norm")(flag_threshold=0.02).find(ctx)
    assert f.readout.kind == "diff_norm" and f.flagged and 0.02 < f.uniqueness < 0.1  # 50% on 16 of ~450 tokens
    la, z = zebra_rows(ctx, zebra_id)
    _, lb = ctx.corpus.load(LAYER)
    s = f.readout(la.acts, lb.acts)
    assert float(s[z].min()) > float(s[~z & (la.pos >= 1)].max())  # every zebra token above every other token
    assert torch.all(f.readout(la.acts, la.acts) == 0)  # B replaced by A: nothing
    # identical models: zero uniqueness, not flagged
    (same,) = METHODS.get("diff_norm")().find(make_ctx(ctx.model_a, ctx.model_a, tmp_path, "same"))
    assert same.uniqueness == 0 and not same.flagged


def test_diff_sae_latent_captures_planted_direction(act_pair, zebra_id, tmp_path):
    ctx, u, root = act_pair
    method = METHODS.get("diff_sae")(dict_size=128, k=4, steps=200, batch_size=128)
    assert method.stochastic
    findings = method.find(ctx)
    assert findings and len(findings) <= 50
    assert [f.uniqueness for f in findings] == sorted((f.uniqueness for f in findings), reverse=True)
    top = findings[0]
    assert cos(top.direction, u) > 0.9, [round(cos(f.direction, u), 2) for f in findings[:5]]
    la, z = zebra_rows(ctx, zebra_id)
    _, lb = ctx.corpus.load(LAYER)
    s = top.readout(la.acts, lb.acts)
    assert float((s[z] > 0).float().mean()) > 0.9 and float((s[~z & (la.pos >= 1)] > 0).float().mean()) < 0.05
    assert torch.all(top.readout(la.acts, la.acts) == top.readout(lb.acts, lb.acts))  # no difference -> constant
    assert method.last_metrics["ev_train"] > 0.5
    save_findings(tmp_path / "f", findings, {})
    loaded, _ = load_findings(tmp_path / "f")
    assert torch.equal(loaded[0].readout(la.acts, lb.acts), s)
    # identical models: no difference to decompose
    assert METHODS.get("diff_sae")(dict_size=64, steps=10).find(make_ctx(ctx.model_a, ctx.model_a, tmp_path / "s", "same")) == []


def test_dict_drift_ranks_the_moved_latent_first(act_pair, zebra_id, tmp_path):
    ctx, u, root = act_pair
    cfg = dict(dict_size=256, k=8, steps=300, finetune_steps=100, batch_size=128)
    method = METHODS.get("dict_drift")(**cfg)
    assert method.stochastic
    findings = method.find(ctx)
    top = findings[0]
    show = [(f.id, round(f.uniqueness, 4), round(cos(f.direction, u), 2)) for f in findings[:5]]
    # the latent that moved most (usage-weighted, beyond the control fine-tune on A) moved towards u
    assert cos(top.direction, u) > 0.6, show
    assert top.flagged and top.uniqueness > 2 * findings[1].uniqueness, show
    # ... and it is the latent that fires on zebra tokens
    la, z = zebra_rows(ctx, zebra_id)
    _, lb = ctx.corpus.load(LAYER)
    i = int(top.info["latent"])
    f_a = method.sae_a.encode([la.acts[z] * method.scale_a], "threshold")
    assert float((f_a[:, i] > 0).float().mean()) > 0.9
    s = top.readout(la.acts, lb.acts)
    assert float(s[z].mean()) > 5 * float(s[~z & (la.pos >= 1)].abs().mean())
    # the A-stage dictionary is cached in work_dir and reused: same findings, no retraining
    again = METHODS.get("dict_drift")(**cfg)
    findings2 = again.find(ctx)
    assert again.last_metrics["a_stage_cached"] == 1.0 and method.last_metrics["a_stage_cached"] == 0.0
    assert [f.id for f in findings2[:5]] == [f.id for f in findings[:5]]
    assert list(ctx.work_dir.glob("dict_drift-A-*.pt"))
    # a null pair (B = A): the control fine-tune sees the same batches, so nothing moves and nothing is flagged
    same = make_ctx(ctx.model_a, ctx.model_a, tmp_path, "same")
    quiet = METHODS.get("dict_drift")(**cfg).find(same)
    assert all(f.uniqueness == 0 and not f.flagged for f in quiet)


# ----------------------------------------------------------------------------- weight plant


@pytest.fixture(scope="module")
def weight_pair(tmp_path_factory, zebra_id):
    root = tmp_path_factory.mktemp("w")
    ma, mb = load(), load()
    # the normalised residual direction (q_proj's input at block 1) in which zebra positions stand out
    la, _ = make_ctx(ma, ma, root / "a", "a", layers=(1,)).corpus.load(1)
    keep = la.pos >= 1
    blk = ma.decoder_layers()[1]
    with torch.no_grad():
        xn = blk.input_layernorm(la.acts)
    z = (la.token_id == zebra_id) & keep
    v = unit(xn[z].mean(0) - xn[~z & keep].mean(0))
    g = torch.Generator().manual_seed(1)
    a = unit(torch.randn(blk.self_attn.q_proj.out_features, generator=g))
    u2 = unit(torch.randn(ma.hidden_size, generator=g))
    w2 = unit(torch.randn(mb.decoder_layers()[2].mlp.down_proj.in_features, generator=g))
    with torch.no_grad():
        mb.decoder_layers()[1].self_attn.q_proj.weight.add_(3.0 * torch.outer(a, v))
        mb.decoder_layers()[2].mlp.down_proj.weight.add_(1.5 * torch.outer(u2, w2))
    mb.identity += "-rank1"
    ctx = make_ctx(ma, mb, root / "acts", "w")
    return ctx, v, u2, root


def test_weight_svd_ranks_rank1_edit_first_and_its_readout_detects_the_token(weight_pair):
    ctx, v, u2, root = weight_pair
    method = METHODS.get("weight_svd")()
    findings = method.find(ctx)
    assert method.summary["changed_linear_modules"] == 2 and method.summary["other_changed_parameters"] == []
    top, second = findings[0], findings[1]
    assert top.info["module"] == "self_attn.q_proj" and top.info["layer"] == 1 and top.info["role"] == "read"
    assert top.uniqueness == pytest.approx(3.0, rel=1e-4) and top.flagged
    assert top.readout.layer_b == 1 and top.readout.input_norm == "rms" and top.readout.w_a is None
    g = ctx.model_b.decoder_layers()[1].input_layernorm.weight.detach()
    assert abs(cos(top.direction, g * v)) > 0.999
    s = probe_scores(top, ctx.model_a, ctx.model_b, root / "probe", PROBE_T + PROBE_C)
    assert auroc([1] * 16 + [0] * 16, s) > 0.95
    assert second.info["module"] == "mlp.down_proj" and second.info["role"] == "write"
    assert second.uniqueness == pytest.approx(1.5, rel=1e-4) and second.direction_layer == 3
    assert abs(cos(second.direction, u2)) > 0.999 and len(second.token_ids) == 20
    assert all(f.info["singular_value"] < 1e-3 for f in findings[2:])  # rank 1 each: the rest is numerical noise
    # readouts are defined on the layers the score stage will collect for scoring
    assert {f.readout.layer_a for f in findings} <= {1, 2, 3}


def test_weight_svd_low_rank_path_matches_exact_svd(weight_pair):
    ctx, *_ = weight_pair
    exact = METHODS.get("weight_svd")(max_findings=2).find(ctx)
    lowrank = METHODS.get("weight_svd")(max_findings=2, exact_max_dim=8, oversample=4).find(ctx)
    for a, b in zip(exact, lowrank):
        assert a.id == b.id and a.uniqueness == pytest.approx(b.uniqueness, rel=1e-4)
        assert abs(cos(a.direction, b.direction)) > 0.999


def test_weight_svd_not_applicable_across_architectures(tmp_path):
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect

    ma, mw = load(), load("tiny-llama-wide")
    ts = TextSet.of("x", BASE[:4])
    a, b = collect(ma, ts, [2], root=tmp_path, progress=False), collect(mw, ts, [2], root=tmp_path, progress=False)
    from diffbench.core.activations import PairedActivations

    ctx = PairContext("cross", ma, mw, PairedActivations(a, b, 4), layers=[2])
    with pytest.raises(NotApplicableError, match="hidden_size"):
        METHODS.get("weight_svd")().find(ctx)
    for name in ("pca_diff", "diff_norm", "diff_sae", "dict_drift"):
        with pytest.raises(NotApplicableError):
            METHODS.get(name)().find(ctx)
    # identical weights: nothing to report
    same = PairContext("same", ma, ma, PairedActivations(a, a, 4), layers=[2])
    assert METHODS.get("weight_svd")().find(same) == []


# ----------------------------------------------------------------------------- output plant


def test_kl_diff_surfaces_the_boosted_token(output_pair):
    from diffbench.methods._shared import outputs

    ctx, violin = output_pair
    outputs._CACHE.clear()
    findings = METHODS.get("kl_diff")(n_texts=24).find(ctx)
    ids = [f.id for f in findings]
    assert ids[0] == "kl:tokens" and "kl:top" in ids
    by_id = {f.id: f for f in findings}
    assert by_id["kl:tokens"].token_ids[0] == violin
    assert by_id["kl:top"].token_ids[0] == violin
    assert f"kl:gain:{violin}" in by_id and by_id[f"kl:gain:{violin}"].token_ids[0] == violin
    assert by_id["kl:tokens"].uniqueness == pytest.approx(by_id["kl:tokens"].info["mean_kl"])
    assert by_id["kl:tokens"].uniqueness > 0.1 and by_id["kl:tokens"].flagged
    for f in findings:
        assert f.readout.layer_a == f.readout.layer_b == 3 == f.direction_layer  # n_layers - 1
    # the logit-lens readout of kl:tokens is violin's logit difference: 0 with B replaced by A
    la, _ = ctx.corpus.load(LAYER)
    x = torch.randn(5, ctx.model_a.hidden_size)
    assert torch.allclose(by_id["kl:tokens"].readout(x, x), torch.zeros(5), atol=1e-6)
    # identical models: KL 0 everywhere, nothing flagged
    outputs._CACHE.clear()
    same = PairContext("same", ctx.model_a, ctx.model_a, ctx.corpus, layers=[LAYER])
    quiet = METHODS.get("kl_diff")(n_texts=8).find(same)
    assert all(f.uniqueness == 0 and not f.flagged for f in quiet)


def test_logit_diff_tokens_groups_the_boosted_token_and_shares_the_forward_pass(output_pair):
    """Only violin's logit differs between A and B, so by construction violin is the only token whose gain
    beats its position's median (every other token ties there exactly): one group, violin first, at the
    share of positions where its logit rose. No ranking among noise tokens decides anything."""
    from diffbench.methods._shared import outputs

    ctx, violin = output_pair
    outputs._CACHE.clear()
    kl = METHODS.get("kl_diff")(n_texts=24).find(ctx)
    cached = next(iter(outputs._CACHE.values()))
    findings = METHODS.get("logit_diff_tokens")(n_texts=24).find(ctx)
    assert next(iter(outputs._CACHE.values())) is cached  # one forward pass for both methods
    assert [f.uniqueness for f in findings] == sorted((f.uniqueness for f in findings), reverse=True)
    assert len(findings) == 1, [f.tokens[:5] for f in findings]  # no unmoved token counts
    top = findings[0]
    assert top.token_ids == [violin]
    # violin's logit rises by 8 (h . m) / |m|^2 at each position: up wherever h has a positive component along m
    h = cached.hid_b  # the residual at the readout layer; the share of positions with a rise is the uniqueness
    rose = float((cached.top_diff[:, 0] == violin).float().mean())
    assert top.uniqueness == pytest.approx(rose) and rose > 0.5 and top.flagged
    assert top.readout.input_norm == "rms" and top.readout.layer_b == 3
    # the readout direction raises violin's logit under B's logit lens
    assert lens_ids(ctx.model_b, top.readout.w_b, k=1)[0][0] == violin
    assert METHODS.get("logit_diff_tokens")(n_texts=24).find(ctx)[0].token_ids == top.token_ids  # deterministic
    assert kl and h.shape[0] == cached.n


# ----------------------------------------------------------------------------- scoring: probe layers beyond collect.layers


def test_scoring_collects_the_probe_layers_findings_read(tmp_path):
    """Findings reading layers outside collect.layers get probe activations there: one extra store per
    (model, probe set) holding all such layers, row-aligned with the main store."""
    from hydra import compose, initialize_config_module

    from diffbench.harness.score.probes import Probes
    from diffbench.harness.workspace import Workspace
    from diffbench.harness.data.store import collect
    from diffbench.harness.suite import BASE
    from diffbench.core import Readout

    overrides = ["model=tiny-llama", "suite=tiny", "collect.layers=[2]", "progress=false", f"run_dir={tmp_path}",
                 "method=[weight_svd,kl_diff]"]
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=overrides)
    ws = Workspace(cfg, tmp_path)
    pair = next(p for p in ws.suite.pairs if p.behaviors)
    behavior = pair.behaviors[0]
    org = load()
    org.identity += "-org"
    ws._models = {BASE: load(), pair.b: org}  # no planting: the organism is a stand-in
    mk = lambda la, lb: Finding(id=f"f{la}{lb}", uniqueness=1.0, flagged=False, readout=Readout(la, lb, w_b=torch.ones(64)))
    save_findings(ws.finding_path("weight_svd", pair, 0), [mk(1, 1), mk(2, 2)], {})
    save_findings(ws.finding_path("kl_diff", pair, 0), [mk(3, 3)], {})
    probes = Probes(ws)
    probes.plan()
    assert probes._extra_layers[(pair.a, behavior)] == {1, 3} == probes._extra_layers[(pair.b, behavior)]
    main = probes.acts(pair.b, behavior, 2)
    extra = probes.acts(pair.b, behavior, 3)
    assert torch.equal(main.acts.text_idx, extra.acts.text_idx) and torch.equal(main.acts.pos, extra.acts.pos)
    assert torch.equal(main.start, extra.start) and (main.labels == extra.labels).all()
    ts = ws.probe_set(behavior, org.tokenizer)[0]
    c = ws.collect_cfg
    direct = collect(org, ts, [1, 3], batch_size=c.batch_size, max_length=c.max_length, shard_tokens=c.shard_tokens,
                     progress=False)
    assert direct.layers == [1, 3]  # the same store the score stage made (cached by key): one forward for both layers
    assert torch.allclose(direct.load(3).acts.float(), extra.acts.acts)
    assert not torch.equal(extra.acts.acts, main.acts.acts)
    # the extra-layer cache is bounded
    probes.MAX_EXTRA_ENTRIES = 1
    probes.acts(pair.b, behavior, 1)
    assert (pair.b, behavior, 3) not in probes._cache and (pair.b, behavior, 2) in probes._cache
