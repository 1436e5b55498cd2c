"""N-way diffing (issue #41): the N-way crosscoder's partition, its findings on a tiny group, the all-pairs baseline's
merge rule, the group context's alignment check and attribution scoring on constructed findings."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffbench.core import Finding, Readout
from diffbench.core.nway import NWAY_METHODS, GroupActivations, GroupContext, GroupFinding, NotAlignedError, validate_group_findings
from diffbench.harness.score.nway import BehaviorScore, GroupScore, aggregate, proportion, score_group
from diffbench.methods.crosscoder._lib import reference as R
from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss
from diffbench.methods.crosscoder._lib.module import Ops
from diffbench.methods.crosscoder._lib.nway import NWayCrosscoder, evaluate_nway
from diffbench.methods.crosscoder._lib.train import TrainConfig, init_from_data, train
from diffbench.methods.nway.all_pairs import merge_pair_findings
from diffbench.methods.nway.crosscoder import NWayCrosscoderMethod
from sentences import SENTENCES  # tests/sentences.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is ~10x faster on 2 shared cores

N = 4
PAIRS = list(itertools.combinations(range(N), 2))


def synth(n=2000, d=32, nf=24, owners=(0, 2), p=0.1, seed=0):
    """Sparse features with one direction each, the same in every member (one base), plus a planted feature (the
    last direction) present in `owners` only."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(nf + 1, d, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    acts = (torch.rand(n, nf + 1, generator=g) < p) * (0.5 + torch.rand(n, nf + 1, generator=g))
    xs = []
    for m in range(N):
        s = torch.ones(nf + 1)
        s[-1] = float(m in owners)
        xs.append(acts @ (u * s[:, None]) * 5 + 0.02 * torch.randn(n, d, generator=g))
    return xs, u[-1]


def sections(n_shared):
    return [(tuple(range(N)), n_shared)] + [((m,), 4) for m in range(N)] + [(s, 4) for s in PAIRS]


def dense_grad(cc: NWayCrosscoder, grads: list[torch.Tensor], m: int) -> torch.Tensor:
    """Model m's gradient as an [n, d] matrix (zero where m has no block)."""
    out = torch.zeros(cc.n, cc.width)
    for b in cc.blocks_of(m):
        lo, hi = cc.ranges[b]
        out[lo:hi] = grads[b]
    return out


# ----------------------------------------------------------------------------- the partition


@pytest.fixture(scope="module")
def few_steps():
    torch.manual_seed(0)
    xs = [torch.randn(512, 16) for _ in range(N)]
    cc = NWayCrosscoder(16, N, sections(8), seed=0)
    init_from_data(cc, xs, data_frac=0.0)
    train(cc, xs, TrainConfig(k=4, aux_k=8, steps=5, batch_size=64, dead_tokens=100, threads="auto"))
    return cc, xs


def test_sections_have_weights_for_their_members_only(few_steps):
    cc, _ = few_steps
    assert len(cc.W_enc) == len(cc.W_dec) == N + 2 * len(PAIRS) + N  # shared: N blocks; each exclusive 1; each pair 2
    for sec in cc.sections:
        for m in range(N):
            enc, dec = cc.dense_encoder(m)[sec.lo:sec.hi], cc.dense_decoder(m)[sec.lo:sec.hi]
            if m in sec.members:
                assert torch.count_nonzero(dec) > 0 and cc.enc_row(m, sec.lo) is not None
            else:
                assert torch.count_nonzero(enc) == 0 and torch.count_nonzero(dec) == 0
                assert cc.enc_row(m, sec.lo) is None and cc.dec_row(m, sec.lo) is None


def test_no_gradient_leaks_across_sections(few_steps):
    """Main and auxiliary loss (every latent dead): model m's gradient is zero on every section m does not own, and
    each section's own members get some; Adam keeps state for the blocks only."""
    cc, xs = few_steps
    xb = [x[:128] for x in xs]
    cfg = TrainConfig(k=4, aux_k=16, aux_coeff=1.0, steps=1)
    cc.zero_grad(set_to_none=True)
    loss, _ = _batchtopk_loss(cc, xb, cfg, Ops("torch"), torch.ones(cc.n, dtype=torch.bool), 16, 0, {})
    loss.backward()
    for grads in ([p.grad for p in cc.W_enc], [p.grad for p in cc.W_dec]):
        for m in range(N):
            g = dense_grad(cc, grads, m)
            for sec in cc.sections:
                if m not in sec.members:
                    assert torch.count_nonzero(g[sec.lo:sec.hi]) == 0, (m, sec)
        assert all(torch.count_nonzero(dense_grad(cc, grads, m)[s.lo:s.hi]) > 0 for s in cc.sections for m in s.members)
    opt = torch.optim.Adam(cc.parameters())
    opt.step()
    assert sorted(tuple(st["exp_avg"].shape) for st in opt.state.values()) == sorted(tuple(p.shape) for p in cc.parameters())
    cc.zero_grad(set_to_none=True)


def test_a_section_reads_and_writes_its_members_only(few_steps):
    cc, xs = few_steps
    xb = [x[:64] for x in xs]
    with torch.no_grad():
        f = torch.relu(cc.preacts(xb))
        code = R.dense_to_code(f)
        base = cc.decode_sparse(code, f[code.rows, code.cols])
        for sec in cc.sections[1:]:
            f2 = f.clone()
            f2[:, sec.lo] += 3.0
            code = R.dense_to_code(f2)
            bumped = cc.decode_sparse(code, f2[code.rows, code.cols])
            changed = {m for m in range(N) if not torch.allclose(bumped[m], base[m], atol=1e-6)}
            assert changed == set(sec.members), sec
            for m in set(range(N)) - set(sec.members):  # another member's input never reaches the section
                moved = [x + torch.randn_like(x) if j == m else x for j, x in enumerate(xb)]
                assert torch.equal(cc.preacts(moved)[:, sec.lo:sec.hi], cc.preacts(xb)[:, sec.lo:sec.hi])


def test_planted_direction_of_two_members_lands_in_their_section():
    """A feature in members {0, 2} of 4: the latent that writes it into member 0 is a {0, 2} latent (or 0's exclusive)
    and aligns with it. The shared section (20 latents) is smaller than the 24 shared features, so it has no room
    to spare; with room to spare a shared latent can take the feature too (its other decoders shrink to zero)."""
    torch.manual_seed(0)
    xs, planted = synth()
    cc = NWayCrosscoder(32, N, sections(20), seed=0)
    init_from_data(cc, xs, data_frac=0.0)
    train(cc, xs, TrainConfig(k=4, aux_k=8, steps=200, batch_size=128, lr=5e-3, dead_tokens=1000, threads="auto"))
    assert min(evaluate_nway(cc, xs)["ev"]) > 0.8
    for m in (0, 2):
        cos = torch.nn.functional.cosine_similarity(cc.dense_decoder(m), planted[None], dim=1)
        i = int(cos.argmax())
        assert cc.section_of(i).members in ((0, 2), (m,)) and float(cos[i]) > 0.8, (m, cc.section_of(i), float(cos[i]))


# ----------------------------------------------------------------------------- on a tiny group of models


@pytest.fixture(scope="module")
def tiny_group(tmp_path_factory):
    """Four tiny-llama members (one base, each block-1 MLP perturbed by its own seed) and their stores at layer 2."""
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect
    from diffbench.harness.models import load_model

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("nway")
    mp.setenv("DIFFBENCH_CACHE", str(root / "cache"))
    try:
        models, stores = [], []
        for m in range(N):
            lm = load_model("tiny-llama", dtype="fp32", device="cpu")
            with torch.no_grad():
                g = torch.Generator().manual_seed(m)
                for p in lm.model.model.layers[1].mlp.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            lm.identity += f"-member{m}"
            models.append(lm)
            stores.append(collect(lm, TextSet.of("t", SENTENCES), [2], root=root / "acts", progress=False))
        yield models, stores, root
    finally:
        mp.undo()


def test_group_context_rejects_stores_that_are_not_token_aligned(tiny_group):
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect

    models, stores, root = tiny_group
    other = collect(models[1], TextSet.of("u", SENTENCES[1:]), [2], root=root / "acts", progress=False)
    with pytest.raises(NotAlignedError, match="member 1's store .* is not token-aligned with member 0's"):
        GroupActivations((stores[0], other, stores[2]), len(SENTENCES))
    with pytest.raises(ValueError, match="2 models but 3 activation stores"):
        GroupContext("g", tuple(models[:2]), GroupActivations(tuple(stores[:3]), len(SENTENCES)), layers=[2])


def test_nway_crosscoder_findings_on_a_tiny_group(tiny_group, tmp_path):
    models, stores, _ = tiny_group
    ctx = GroupContext("tiny4", tuple(models), GroupActivations(tuple(stores), len(SENTENCES)), layers=[2],
                       work_dir=tmp_path)
    method = NWAY_METHODS.get("nway_crosscoder")(dict_size=128, k=8, steps=40, batch_size=64, max_tokens=2000,
                                                 eval_frac=0.25, excl_frac=0.08, subset_frac=0.04, max_findings=20)
    assert isinstance(method, NWayCrosscoderMethod)
    findings = method.find(ctx)
    validate_group_findings(findings, ctx)
    assert findings and [f.uniqueness for f in findings] == sorted((f.uniqueness for f in findings), reverse=True)
    cc, data = method.crosscoder, method.data
    acts = ctx.corpus.load(2)
    keep = acts[0].pos > 0
    with torch.no_grad():
        codes = cc.encode([la.acts[keep] * s for la, s in zip(acts, data.scales)])
    for f in findings:
        members = cc.section_of(int(f.info["latent"])).members
        assert f.models == members and len(members) in (1, 2) and f.info["section"] == "+".join(map(str, members))
        assert f.reads == (members[0], members[-1]) and (f.readout.w_a is None) == (len(members) == 1)
        scores = f.readout(acts[f.reads[0]].acts, acts[f.reads[1]].acts)  # the readout is the latent itself
        assert torch.allclose(scores[keep], codes[:, int(f.info["latent"])], atol=1e-3, rtol=1e-3)
        assert len(f.tokens) == 20 and f.direction.shape == (models[0].hidden_size,)
    assert all(math.isfinite(method.last_metrics[f"ev_{m}"]) for m in range(N))  # 195 rows: too few to reconstruct


def test_all_pairs_runs_the_pair_method_on_every_ordered_pair(tiny_group):
    models, stores, _ = tiny_group
    ctx = GroupContext("tiny3", tuple(models[:3]), GroupActivations(tuple(stores[:3]), len(SENTENCES)), layers=[2])
    findings = NWAY_METHODS.get("all_pairs")(pair_params={"n_pca": 2}).find(ctx)
    validate_group_findings(findings, ctx)
    pairs = {p for f in findings for p in f.info["pairs"].split(",")}
    assert pairs == {f"{i}>{j}" for i in range(3) for j in range(3) if i != j}  # 6 runs, each reported
    assert sum(f.info["n_pairs"] for f in findings) == 6 * 3  # mean + 2 principal directions per run


def test_subsets_of_three_members_are_refused():
    method = NWayCrosscoderMethod(subsets=[[0, 1, 2]])
    with pytest.raises(ValueError, match="readout of three or more models"):
        method.sections(5, 256)
    assert [s for s, _ in NWayCrosscoderMethod().sections(5, 256)] == [(0, 1, 2, 3, 4), (0,), (1,), (2,), (3,), (4,)]


# ----------------------------------------------------------------------------- the all-pairs merge rule


def pair_finding(fid: str, tokens: list[int], uniq: float, side: str = "b", flagged: bool = True) -> Finding:
    return Finding(id=fid, uniqueness=uniq, flagged=flagged, side=side, token_ids=tokens, tokens=[str(t) for t in tokens],
                   readout=Readout(layer_a=1, layer_b=1, w_a=-torch.ones(4), w_b=torch.ones(4)))


def test_all_pairs_merges_same_token_findings_into_the_union_of_their_sides():
    runs = [
        (1, 0, pair_finding("x", [7, 8, 9], 0.5)),  # side b of 1 -> 0: {0}
        (3, 2, pair_finding("x", [9, 8, 7, 1], 0.9, flagged=False)),  # same first three tokens as a set: {2}
        (0, 3, pair_finding("y", [5, 6, 7], 0.4, side="a")),  # side a: {0}
        (1, 2, pair_finding("z", [5, 6, 7], 0.3, side="both", flagged=False)),  # same tokens as "y": {1, 2}
        (2, 1, pair_finding("w", [], 0.2)),  # no tokens: never merged
        (0, 1, pair_finding("v", [], 0.1)),
    ]
    merged = merge_pair_findings(runs, merge_tokens=3, prefix="all_pairs:t")
    by_id = {f.id: f for f in merged}
    assert [f.id for f in merged] == ["all_pairs:t:3>2:x", "all_pairs:t:0>3:y", "all_pairs:t:2>1:w", "all_pairs:t:0>1:v"]
    x, y = by_id["all_pairs:t:3>2:x"], by_id["all_pairs:t:0>3:y"]
    assert x.models == (0, 2) and x.reads == (3, 2) and x.uniqueness == 0.9 and x.flagged  # flagged by the 1 -> 0 run
    assert x.info["pairs"] == "1>0,3>2" and x.info["n_pairs"] == 2.0
    assert y.models == (0, 1, 2) and y.flagged
    assert by_id["all_pairs:t:2>1:w"].models == (1,) and by_id["all_pairs:t:0>1:v"].models == (1,)
    assert all(f.models == (m,) for f, m in zip(merge_pair_findings(runs[:2], 0, "p"), (2, 0)))  # merge_tokens 0


# ----------------------------------------------------------------------------- attribution scoring


def gf(fid: str, models: tuple[int, ...], flagged: bool = True) -> GroupFinding:
    return GroupFinding(id=fid, uniqueness=1.0, flagged=flagged, readout=Readout(layer_a=1, layer_b=1, w_b=torch.ones(4)),
                        models=models, reads=(models[0], models[-1]))


def test_exact_set_and_per_model_recall_differ_where_they_should():
    """Behavior p is in {0, 2}; q in {1}; member 3 is the null organism."""
    findings = [gf("f0", (0,)), gf("f1", (2,)), gf("f2", (1, 3)), gf("f3", (0, 2)), gf("f4", (3,), flagged=False)]
    truth = {"p": {0, 2}, "q": {1}}
    matches = {"p": {"f0", "f1", "f3"}, "q": {"f2"}}
    top2 = {b.behavior: b for b in score_group(findings, truth, matches, k=2, null_member=3).behaviors}
    # top 2: two single-member findings of p: every member found, but no finding names the exact set
    assert not top2["p"].exact_hit and top2["p"].per_model_recall == 1.0 and top2["p"].attribution_accuracy == 0.0
    assert top2["q"].n_matching == 0 and math.isnan(top2["q"].attribution_accuracy) and top2["q"].per_model_recall == 0
    g = score_group(findings, truth, matches, k=4, null_member=3)
    top4 = {b.behavior: b for b in g.behaviors}
    assert top4["p"].exact_hit and top4["p"].attribution_accuracy == pytest.approx(1 / 3)
    # q's only match is attributed to {1, 3}: member 1 found, exact set missed, attribution wrong
    assert not top4["q"].exact_hit and top4["q"].per_model_recall == 1.0 and top4["q"].attribution_accuracy == 0.0
    assert g.null_false_alarms == 1  # f2 ({1, 3}, flagged); f4 names the null member but is not flagged
    assert score_group(findings, truth, lambda b, f: f.id in matches[b], k=4, null_member=3) == g  # a callable
    assert score_group(findings, truth, matches, k=4).null_false_alarms == 0  # no null member


def test_aggregate_pools_behaviors_and_groups_with_intervals():
    b = lambda hit, found, truth, n, e: BehaviorScore("b", frozenset(truth), 5, hit, frozenset(found), n, e)
    groups = [GroupScore((b(True, {0, 2}, {0, 2}, 2, 1), b(False, {1}, {1, 3}, 1, 0)), 3, 2),
              GroupScore((b(False, set(), {0}, 0, 0),), None, 0),
              GroupScore((b(True, {1}, {1}, 1, 1),), 0, 0)]
    agg = aggregate(groups)
    assert (agg["exact_set_recall"].successes, agg["exact_set_recall"].trials) == (2, 4)
    assert (agg["per_model_recall"].successes, agg["per_model_recall"].trials) == (4, 6)
    assert (agg["attribution_accuracy"].successes, agg["attribution_accuracy"].trials) == (2, 4)
    assert (agg["null_false_alarm_rate"].successes, agg["null_false_alarm_rate"].trials) == (1, 2)
    assert agg["null_false_alarms_per_group"] == 1.0
    r = agg["exact_set_recall"]
    assert r.lo < 0.5 < r.hi and (r.lo, r.hi) == pytest.approx((0.1500, 0.8500), abs=1e-3)  # Wilson, 2 of 4
    exact = proportion(2, 4, "exact")
    assert exact.lo < r.lo and exact.hi > r.hi  # Clopper-Pearson is wider
    assert math.isnan(proportion(0, 0).value) and proportion(0, 10).lo == pytest.approx(0.0, abs=1e-12)


def test_nway_crosscoder_refuses_streamed_training():
    """The two-model crosscoders' `data: stream` option is not silently ignored by the N-way one."""
    with pytest.raises(ValueError, match="data='stream' is not supported"):
        NWAY_METHODS.get("nway_crosscoder")(data="stream")
    assert "data" not in NWAY_METHODS.get("nway_crosscoder")().config
