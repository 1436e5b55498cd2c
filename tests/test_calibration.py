"""The calibrated activation match on synthetic probe activations whose answers are known by construction.

The setting reproduces the failure of the old rule: model B differs from A on every token, much more on
trigger prompts than on controls (the fine-tune's footprint), so a readout of h_B - h_A along any
direction separates T from C. A planted feature (one direction, on one token of each trigger prompt) is
what a good finding should read.
"""

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from diffbench.harness.score.calibration import Family, TokenNull, batch_auroc, batch_dprime, family_of
from diffbench.harness.score.config import ScoringConfig
from diffbench.harness.score.scoring import Keywords, ProbeActs, match_finding, per_prompt_scores, probe_null, safe_auroc
from diffbench.core.activations import LayerActs
from diffbench.core import Finding, Readout

D, N_T, N_C, LEN = 64, 30, 30, 8
CFG = ScoringConfig(bootstrap=0)
NO_KW = Keywords(frozenset())


def footprint_pair(seed=0, planted=True):
    """A's activations; B = A + a per-token difference whose norm is 3x larger on T prompts, plus (planted) a
    feature along e_0 on one token of every T prompt."""
    g = torch.Generator().manual_seed(seed)
    n = N_T + N_C
    text_idx = torch.arange(n).repeat_interleave(LEN)
    pos = torch.arange(LEN).repeat(n)
    is_t = text_idx < N_T
    a = torch.randn(n * LEN, D, generator=g)
    diff = torch.randn(n * LEN, D, generator=g) * 0.3
    diff[is_t] *= 3.0  # the footprint: larger differences on trigger prompts, in no particular direction
    b = a + diff
    if planted:
        b[is_t & (pos == 5), 0] += 12.0
    labels = np.array([1] * N_T + [0] * N_C)
    mk = lambda x: ProbeActs(LayerActs(x, text_idx, pos, torch.zeros_like(pos)), labels, torch.zeros(n, dtype=torch.long))
    return mk(a), mk(b)


def null_for(pa, pb, cfg=CFG, seed=0):
    return probe_null(pa, lambda side, layer: pa if side == "a" else pb, cfg, seed=seed)


def diff_finding(v: torch.Tensor, fid="f") -> Finding:
    v = v / v.norm()
    return Finding(fid, 1.0, True, Readout(0, 0, w_a=-v, w_b=v.clone()))


def test_batch_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 15 + [0] * 25)
    scores = rng.integers(0, 4, size=(40, 6)).astype(float)  # many ties, as relu readouts give
    scores[:, 5] = -np.inf
    got = batch_auroc(labels, scores)
    want = [roc_auc_score(labels, np.nan_to_num(scores[:, j], neginf=-1e30)) for j in range(5)]
    assert np.allclose(got[:5], want) and got[5] == 0.5
    assert np.allclose([safe_auroc(labels, scores[:, j]) for j in range(6)], [*want, 0.5])
    cont = rng.normal(size=(40, 3))
    assert np.allclose(batch_auroc(labels, cont), [roc_auc_score(labels, cont[:, j]) for j in range(3)])


def test_random_difference_readout_matched_under_the_old_rule_and_not_now():
    pa, pb = footprint_pair(planted=False)
    g = torch.Generator().manual_seed(1)
    f = diff_finding(torch.randn(D, generator=g))
    old, tok = match_finding(f, pa, pb, NO_KW, CFG, null=None)
    assert old.auroc >= 0.85 and old.match and not tok  # the footprint alone makes any direction separate T and C
    assert old.control == 0.5  # ... and B replaced by A is constant: the old control could never veto it
    ctrl = safe_auroc(pa.labels, per_prompt_scores(f.readout(pa.acts.acts, pa.acts.acts), pa))
    assert ctrl == 0.5
    new, _ = match_finding(f, pa, pb, NO_KW, CFG, null_for(pa, pb))
    assert not new.match and new.p > CFG.alpha / CFG.K and new.null_q >= 0.85
    assert family_of(f.readout).reads_difference


def test_planted_direction_matches_and_random_ones_do_not():
    pa, pb = footprint_pair()
    null = null_for(pa, pb)
    hit, _ = match_finding(diff_finding(torch.eye(D)[0]), pa, pb, NO_KW, CFG, null)
    assert hit.match and hit.auroc >= hit.null_q and hit.p <= CFG.alpha / CFG.K  # perfect, like some random ones: d' decides
    # one-model readout of the planted feature: matches, and its control (A's activations) does not separate
    one = Finding("b", 1.0, True, Readout(0, 0, w_b=torch.eye(D)[0]))
    m, _ = match_finding(one, pa, pb, NO_KW, CFG, null)
    assert m.match and m.control < CFG.control_auroc_max


def test_difference_norm_readout_never_beats_its_own_family():
    pa, pb = footprint_pair()
    f = Finding("n", 1.0, True, Readout(0, 0, kind="diff_norm"))
    m, _ = match_finding(f, pa, pb, NO_KW, CFG, null_for(pa, pb))
    assert m.auroc >= 0.85 and not m.match  # it only says where the models differ, which is the footprint


def test_scale_and_bias_invariant_families_share_a_null():
    v = torch.randn(D)
    assert family_of(Readout(0, 0, w_a=-v, w_b=v.clone())) == family_of(Readout(0, 0, w_a=-3 * v, w_b=3 * v))
    assert family_of(Readout(0, 0, w_b=v, act="abs")) == family_of(Readout(0, 0, w_b=5 * v, act="abs"))
    latent = family_of(Readout(0, 0, w_a=v, w_b=2 * v, act="relu", bias=-1.0, threshold=0.5))
    assert latent.structure == "both" and latent.bias == -1.0 and latent.threshold == 0.5 and latent.norm_b > latent.norm_a
    assert isinstance(latent, Family)


def test_family_wise_false_match_rate_of_random_top20_lists():
    """200 simulated top-20 lists of random readouts (difference, one-model and crosscoder-like families) on
    footprint pairs: the share of lists with any activation match must be <= alpha plus its binomial error."""
    lists, matched = 200, 0
    rng = torch.Generator().manual_seed(7)
    pairs = [footprint_pair(seed=s, planted=False) for s in range(4)]
    nulls = [null_for(pa, pb, seed=100 + i) for i, (pa, pb) in enumerate(pairs)]
    for i in range(lists):
        pa, pb = pairs[i % len(pairs)]
        null = nulls[i % len(pairs)]
        any_match = False
        for j in range(20):
            v = torch.randn(D, generator=rng)
            v = v / v.norm()
            kind = j % 3
            if kind == 0:
                r = Readout(0, 0, w_a=-v, w_b=v.clone())
            elif kind == 1:
                r = Readout(0, 0, w_b=v * 2.0, act="abs")
            else:
                u = torch.randn(D, generator=rng)
                r = Readout(0, 0, w_a=0.3 * u / u.norm(), w_b=v, act="relu")  # fixed norms: one shared family
            m, _ = match_finding(Finding(f"r{j}", 1.0, False, r), pa, pb, NO_KW, CFG, null)
            any_match |= m.match
        matched += any_match
    rate = matched / lists
    bound = CFG.alpha + 2 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / lists)
    assert rate <= bound, (rate, bound)


def test_early_stopping_null_decides_as_the_full_null():
    """Chunked draws with early stop give the decision (and, where they run to the end, the p-value) of all draws."""
    pa, pb = footprint_pair()
    null = probe_null(pa, lambda side, layer: pa if side == "a" else pb, ScoringConfig(bootstrap=0, null_draws=5000), seed=3)
    full = probe_null(pa, lambda side, layer: pa if side == "a" else pb, ScoringConfig(bootstrap=0, null_draws=5000), seed=3)
    level = 0.02 / 20
    g = torch.Generator().manual_seed(5)
    readouts = [Readout(0, 0, w_a=-torch.eye(D)[0], w_b=torch.eye(D)[0])]  # the planted direction: passes
    for j in range(12):
        v = torch.randn(D, generator=g)
        readouts.append(Readout(0, 0, w_a=-v, w_b=v.clone()) if j % 2 else Readout(0, 0, w_b=v, act="relu", bias=-0.5))
    drawn = []
    for r in readouts:
        a, d = _stats(r, pa, pb)
        fast, slow = null.test(r, a, d, level), full.test(r, a, d, 1.0)  # level 1: never stops early
        assert slow.drawn == 5000
        assert (fast.p <= level) == (slow.p <= level)
        if fast.drawn == 5000:
            assert fast.p == slow.p
        else:  # stopped: p could no longer reach the level, and fewer draws were made
            assert fast.p > level and fast.drawn < 5000
        drawn.append(fast.drawn)
    assert min(drawn) == 2000 and max(drawn) == 5000  # both paths taken
    assert null.test(readouts[0], *_stats(readouts[0], pa, pb), level).p <= level


def _stats(r, pa, pb):
    scores = per_prompt_scores(r(pa.acts.acts, pb.acts.acts), pa)
    return safe_auroc(pa.labels, scores), float(batch_dprime(pa.labels, scores[:, None])[0])


def test_token_channel_is_off_where_random_lens_lists_show_the_keyword(tiny):
    """The token null counts random directions whose logit lens shows a keyword: a token the lens of random
    directions shows often, even first, cannot make a token match; one it never shows can."""
    cfg = ScoringConfig(bootstrap=0)
    null = TokenNull(cfg.token_null_draws, cfg.top_tokens, seed=0)
    lists = null.lists(tiny)
    first = torch.bincount(lists[:, 0], minlength=tiny.model.get_output_embeddings().weight.shape[0])
    counts = torch.bincount(lists.flatten(), minlength=len(first))
    common, never = int(first.argmax()), int((counts == 0).nonzero()[0])
    assert first[common] > cfg.token_null_draws * cfg.token_alpha / cfg.K  # a tiny vocabulary: some tokens often come first
    f = Finding("f", 1.0, True, Readout(0, 0, w_b=torch.ones(tiny.hidden_size)), token_ids=[common, never])
    loud = Keywords(frozenset({common}), null.rank_p_values(tiny, {common}))
    quiet = Keywords(frozenset({never}), null.rank_p_values(tiny, {never}))
    assert loud.p_for(f.token_ids, cfg) > cfg.token_alpha / cfg.K and not loud.match(f.token_ids, cfg)
    assert quiet.p == 1 / (cfg.token_null_draws + 1) and quiet.match(f.token_ids, cfg)


def test_token_channel_is_rank_aware(tiny):
    """A keyword that random lens lists show somewhere in their top 20 too often to count there, but rarely first,
    counts when a finding puts it first and not when the finding shows it 20th; and a chance finding (a fresh random
    direction's lens list) still token-matches at most at the level alpha/K."""
    from diffbench.core.lens import lens_ids

    cfg = ScoringConfig(bootstrap=0)
    null = TokenNull(cfg.token_null_draws, cfg.top_tokens, seed=0)
    lists = null.lists(tiny)
    level = cfg.token_alpha / cfg.K
    vocab = tiny.model.get_output_embeddings().weight.shape[0]
    first = torch.bincount(lists[:, 0], minlength=vocab)
    anywhere = torch.bincount(lists.unique(dim=1).flatten(), minlength=vocab)
    ok = ((first + 1) <= level * (cfg.token_null_draws + 1)) & ((anywhere + 1) > level * (cfg.token_null_draws + 1))
    assert ok.any(), "no token that is rare first but common in the top 20 (tiny vocabulary)"
    kw_id = int(ok.nonzero()[0])
    filler = [t for t in range(vocab) if t != kw_id][: cfg.top_tokens]
    kw = Keywords(frozenset({kw_id}), null.rank_p_values(tiny, {kw_id}))
    assert kw.match([kw_id] + filler[:-1], cfg)  # rank 1
    assert not kw.match(filler[:-1] + [kw_id], cfg)  # rank 20
    assert list(kw.rank_p) == sorted(kw.rank_p)  # p(r) grows with r
    # chance findings: fresh random directions, every token of the vocabulary a keyword in turn would be costly, so
    # take the 50 tokens random lists show most (the hardest case) as one keyword set
    busy = frozenset(int(t) for t in torch.topk(torch.bincount(lists.flatten(), minlength=vocab), 50).indices)
    g = torch.Generator().manual_seed(123)
    fresh = lens_ids(tiny, torch.randn(4000, tiny.hidden_size, generator=g), cfg.top_tokens)
    for ids in (busy, frozenset({kw_id}), frozenset(int(t) for t in ok.nonzero()[:20, 0])):
        kw = Keywords(ids, null.rank_p_values(tiny, set(ids)))
        rate = sum(kw.match(list(row), cfg) for row in fresh) / len(fresh)
        assert rate <= level + 3 * (level / len(fresh)) ** 0.5 + 1 / len(fresh), (sorted(ids)[:5], rate)
