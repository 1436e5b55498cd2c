"""The shipped audit-corpus answers (harness/data/answers.py): every suite's corpus is answered from the file, a prompt
the file lacks is generated here, and a file made for other weights is not used."""

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shipped_answers_cover_the_suites_corpora():
    """`make run` (quick) and the zoo reference read every corpus answer from the shipped file, made for the weights
    diffbench loads under that name: no answer is generated on the machine."""
    from hydra import compose, initialize_config_module

    from diffbench.core.io import read_checked_json, stable_hash
    from diffbench.harness.data.answers import answers_path
    from diffbench.harness.data.corpus import plan_for
    from diffbench.harness.models import MODEL_SOURCES, load_tokenizer
    from diffbench.harness.suite import Suite

    tok = load_tokenizer("smollm2-135m")
    for suite_name in ("quick",):
        with initialize_config_module(config_module="diffbench.conf", version_base=None):
            cfg = compose("config", overrides=[f"suite={suite_name}"])
        suite = Suite.from_config(cfg.suite)
        path = answers_path("smollm2-135m", suite.corpus.answer_tokens)
        data = read_checked_json(path)
        assert data["identity"] == stable_hash({"name": "smollm2-135m", **MODEL_SOURCES.get("smollm2-135m").identity()})
        prompts = plan_for(tok, suite.specs, suite.corpus).prompts
        missing = [p for p in prompts if p not in data["answers"]]
        assert not missing, f"suite {suite_name}: {len(missing)} corpus prompts have no shipped answer " \
                            "(run scripts/ship_corpus_answers.py)"
        assert all(isinstance(a, str) for a in data["answers"].values())


def test_corpus_answers_mix_shipped_and_generated(tiny, tmp_path, monkeypatch):
    from diffbench.harness.data import answers as mod
    from diffbench.harness.plant.distill import distill

    monkeypatch.setattr(mod, "answers_path", lambda name, n: tmp_path / f"{name}-{n}.json")
    mod._read.cache_clear()
    prompts = ["Name a fruit.", "What is rain?", "Say hello."]
    mod.ship(tiny, prompts[:2], 6, machine="test cpu", commit="abc")
    got, record = mod.corpus_answers(tiny, prompts, 6, progress=False)
    assert record["shipped"] == 2 and record["generated_here"] == 1
    assert record["shipped_from"] == {"dtype": "fp32", "machine": "test cpu", "commit": "abc"}
    assert got == distill(tiny, prompts, 6, progress=False)  # the same greedy answers either way (fp32, same model)

    # a file made for other weights under the same name is not used
    data = mod._read(tmp_path / f"{tiny.name}-6.json")
    data["identity"] = "another-checkpoint"
    _, record = mod.corpus_answers(tiny, prompts, 6, progress=False)
    assert record == {"shipped": 0, "generated_here": 3}
    mod._read.cache_clear()


def test_a_corrupted_answers_file_is_a_clear_error(tiny, tmp_path, monkeypatch):
    from diffbench.core.io import CorruptFileError
    from diffbench.harness.data import answers as mod

    monkeypatch.setattr(mod, "answers_path", lambda name, n: tmp_path / f"{name}-{n}.json")
    mod._read.cache_clear()
    path = mod.ship(tiny, ["Name a fruit."], 4, machine="m", commit="c")
    path.write_text(path.read_text().replace('"m"', '"n"'))
    mod._read.cache_clear()
    with pytest.raises(CorruptFileError, match="reinstall diffbench"):
        mod.corpus_answers(tiny, ["Name a fruit."], 4, progress=False)
    mod._read.cache_clear()
