"""The N-way forms of the strong two-model baselines (per_member, mean_vs_rest, logprob_vs_rest) on tiny groups whose
answer is known by construction.

The group: a tiny-llama base and four members, each with its own small perturbation of block 0's MLP (a fine-tune's
noise). Members 0 and 2 also carry one planted change in block 1's MLP down_proj, which writes residual index 2: a
rank-1 weight change s * v w^T and a bias 4 * v (v a unit vector), so their residual at index 2 moves along v at every
token and weight_svd's top triplet of that module is (s, v, w) in both. The output group: a null member (the base
itself) and two noisy members, one of which raises the logit of " zebra" where the base predicts it.
"""

from __future__ import annotations

import pytest
import torch

from diffbench.core import METHODS, NotApplicableError
from diffbench.core.nway import NWAY_METHODS, GroupActivations, GroupContext, validate_group_findings
from diffbench.methods import load_all_methods
from diffbench.methods.nway.all_pairs import merge_pair_findings
from sentences import NEUTRAL  # tests/sentences.py
from test_nway import pair_finding  # the all-pairs merge's constructed findings
from tiny_pairs import raise_logit

load_all_methods()
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

N = 4
PLANTED = (0, 2)
LAYER = 2
ZEBRA_TEXTS = range(32, 48)  # NEUTRAL's texts with " zebra"


def tiny_with_bias():
    """tiny-llama with a (zero) bias on block 1's down_proj, so that every model of the group has the same parameters
    (weight_svd compares them by name) and a planted one can write a constant vector into residual index 2."""
    from diffbench.harness.models import load_model

    lm = load_model("tiny-llama", dtype="fp32", device="cpu")
    lm.model.model.layers[1].mlp.down_proj.bias = torch.nn.Parameter(torch.zeros(lm.hidden_size), requires_grad=False)
    return lm


def noisy(seed: int, identity: str):
    """`tiny_with_bias` with block 0's MLP perturbed by `seed` (std 0.02)."""
    lm = tiny_with_bias()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in lm.model.model.layers[0].mlp.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    lm.identity += f"-{identity}"
    return lm


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """(GroupContext of the four members with their base, the planted unit vector v, the null/zebra output group)."""
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect

    root = tmp_path_factory.mktemp("nway-baselines")
    texts = TextSet.of("nway-baselines", NEUTRAL)
    store = lambda lm: collect(lm, texts, [LAYER], root=root / "acts", progress=False)
    base = tiny_with_bias()
    g = torch.Generator().manual_seed(100)
    v = torch.randn(base.hidden_size, generator=g)
    v /= v.norm()
    w = torch.randn(2 * base.hidden_size, generator=g)  # tiny-llama's intermediate width
    members = [noisy(m, f"member{m}") for m in range(N)]
    for m in PLANTED:
        down = members[m].model.model.layers[1].mlp.down_proj
        with torch.no_grad():
            down.weight.add_(3.0 * torch.outer(v, w / w.norm()))
            down.bias.add_(4.0 * v)
    ctx = GroupContext("planted", tuple(members), GroupActivations(tuple(store(lm) for lm in members), len(NEUTRAL)),
                       layers=[LAYER], base=base, base_store=store(base))

    # the output group: a noisy member, one that also raises " zebra" along the base's final states that predict it
    # (an untied head: its activations are those of its noise alone), and the base as the null member
    tok = base.tokenizer
    zebra = tok(" zebra", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        hs = []
        for i in ZEBRA_TEXTS:
            ids = torch.tensor([tok(NEUTRAL[i], add_special_tokens=False).input_ids])
            hs.append(base.model.model(input_ids=ids).last_hidden_state[0, (ids[0] == zebra).nonzero().squeeze(1) - 1])
    zebra_member = noisy(7, "zebra")
    raise_logit(zebra_member, zebra, torch.cat(hs).mean(0), 8.0)
    out_models = (members[1], zebra_member, base)
    out = GroupContext("zebra", out_models, GroupActivations(tuple(store(lm) for lm in out_models), len(NEUTRAL)),
                       layers=[LAYER])
    return ctx, v, out, zebra


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


# ----------------------------------------------------------------------------- per_member


def test_per_member_runs_the_pair_method_on_base_and_each_member(group):
    """merge_tokens 0: every finding is one of weight_svd's on (base, m), attributed to {m} and read on (base, m)."""
    ctx, _, _, _ = group
    findings = NWAY_METHODS.get("per_member")(merge_tokens=0, max_findings=1000).find(ctx)
    validate_group_findings(findings, ctx)
    pair = METHODS.get("weight_svd")()
    for m in range(N):
        own = [f for f in findings if f.info["members"] == str(m)]
        assert {f.id for f in own} == {f"per_member:weight_svd:{m}:{f.id}" for f in pair.find(ctx.base_pair_context(m))}
        assert own and all(f.models == (m,) and f.reads == (m, m) for f in own)
    assert len(findings) == sum(f.info["n_members"] for f in findings)


def test_per_member_merges_one_change_in_two_members_into_their_subset(group):
    ctx, v, _, _ = group
    findings = NWAY_METHODS.get("per_member")().find(ctx)
    validate_group_findings(findings, ctx)
    top = findings[0]  # the planted rank-1 change (s = 3) outranks the noise's singular values
    assert top.models == PLANTED and top.info["members"] == "0,2" and top.info["n_members"] == 2.0
    assert top.info["module"] == "mlp.down_proj" and top.info["layer"] == 1.0 and abs(cos(top.direction, v)) > 0.99
    assert top.reads in ((0, 0), (2, 2)) and top.flagged
    for f in findings:  # the rest: each member's own noise, attributed to that member (or merged by shared tokens)
        assert f.models == tuple(sorted(int(m) for m in f.info["members"].split(","))) and f.reads[0] in f.models
    assert {m for f in findings[1:] for m in f.models} == set(range(N))


def test_per_member_needs_the_base_and_inherits_the_floor(group):
    ctx, _, _, _ = group
    no_base = GroupContext("nobase", ctx.models, ctx.corpus, layers=[LAYER])
    with pytest.raises(NotApplicableError, match="no base"):
        NWAY_METHODS.get("per_member")().find(no_base)
    floor = NWAY_METHODS.get("per_member")(pair_method="random_directions")
    assert floor.floor and floor.stochastic and not NWAY_METHODS.get("per_member")().floor


def test_all_pairs_merge_is_the_shared_merge():
    """merge_pair_findings goes through the generalised merge with all_pairs' ids and info (test_nway.py checks more)."""
    runs = [(1, 0, pair_finding("x", [7, 8, 9], 0.5)), (3, 2, pair_finding("x", [9, 8, 7], 0.9, side="a"))]
    (f,) = merge_pair_findings(runs, 3, "p")
    assert (f.id, f.models, f.reads, f.info["pairs"], f.info["n_pairs"]) == ("p:3>2:x", (0, 3), (3, 2), "1>0,3>2", 2.0)


# ----------------------------------------------------------------------------- mean_vs_rest


def test_mean_vs_rest_attributes_the_planted_vector_to_its_two_members(group):
    """v in members {0, 2} of 4: each of them is 2v/3 from the rest's mean, each other member -2v/3. The logit lens
    tells +v from -v: one finding along v attributed to {0, 2} and its mirror attributed to {1, 3}, as strong
    (k = N / 2: the rest's mean cannot say which half differs)."""
    ctx, v, _, _ = group
    findings = NWAY_METHODS.get("mean_vs_rest")(n_pca=2).find(ctx)
    validate_group_findings(findings, ctx)
    planted = [f for f in findings[:2] if f.models == PLANTED]
    mirror = [f for f in findings[:2] if f.models == (1, 3)]
    assert len(planted) == len(mirror) == 1, [(f.models, f.id) for f in findings[:4]]
    assert cos(planted[0].direction, v) > 0.9 and cos(mirror[0].direction, v) < -0.9
    assert planted[0].flagged and planted[0].uniqueness == pytest.approx(mirror[0].uniqueness, rel=0.2)
    for f in findings:
        assert f.reads == (f.reads[0],) * 2 and f.reads[0] in f.models and f.readout.w_a is None
    # the readout is the projection of member m's activations on the unit direction (the base's are not read)
    f = planted[0]
    base_acts, acts = ctx.base_store.load(LAYER).acts, ctx.corpus.stores[f.reads[1]].load(LAYER).acts
    assert torch.allclose(f.readout(base_acts, acts), acts @ (f.direction / f.direction.norm()), atol=1e-4)
    assert torch.allclose(f.readout(torch.zeros_like(base_acts), acts), f.readout(base_acts, acts))


def test_mean_vs_rest_without_a_difference_reports_small_uniqueness(group):
    """Two copies of member 1 and one of member 3: only the noise differs; nothing is as large as the planted change."""
    ctx, _, _, _ = group
    quiet = GroupContext("quiet", (ctx.models[1], ctx.models[3], ctx.models[1]),
                         GroupActivations((ctx.corpus.stores[1], ctx.corpus.stores[3], ctx.corpus.stores[1]), len(NEUTRAL)),
                         layers=[LAYER])
    planted = NWAY_METHODS.get("mean_vs_rest")(n_pca=0).find(ctx)[0].uniqueness
    findings = NWAY_METHODS.get("mean_vs_rest")(n_pca=0).find(quiet)
    validate_group_findings(findings, quiet)
    assert max(f.uniqueness for f in findings) < planted / 5
    # members 0 and 2 of the quiet group are one model: their mean findings merge
    assert any(f.models == (0, 2) for f in findings)


# ----------------------------------------------------------------------------- logprob_vs_rest


def test_logprob_vs_rest_ranks_first_a_text_raised_in_one_member(group):
    _, _, out, zebra = group
    method = NWAY_METHODS.get("logprob_vs_rest")(threads=1)
    findings = method.find(out)
    validate_group_findings(findings, out)
    top = findings[0]
    assert top.models == (1,) and top.reads == (1, 1) and top.side == "b" and top.flagged
    assert top.info["text"] in ZEBRA_TEXTS and top.token_ids[0] == zebra and top.info["members"] == "1"
    # the same text in the two others: below the rest's mean by about half as much, merged into one side-a finding
    (mirror,) = [f for f in findings if f.info["text"] == top.info["text"] and f.side == "a"]
    assert mirror.models == (0, 2) and mirror.info["n_members"] == 2.0
    assert 0.3 * top.uniqueness < mirror.uniqueness < 0.7 * top.uniqueness
    raised = [f for f in findings if f.side == "b" and f.info["text"] in ZEBRA_TEXTS]
    assert raised and all(f.models == (1,) for f in raised)
    # the readout is logprob_diff's with the base in the rest's place: 0 where member 1 is replaced by the base
    acts = out.corpus.stores[1].load(LAYER).acts
    assert top.readout.layer_b == out.models[0].n_layers - 1
    assert torch.count_nonzero(top.readout(acts, acts)) == 0
