"""logprob_diff_sampled and kl_diff_sampled (the output baselines on completions sampled from model B) on a tiny
organism whose change shows only in its own answers.

The organism: model B is tiny-llama with violin's unembedding row raised along the direction that separates the
final hidden state after trigger prompts (a user message ending in a long run of "zebra") from that after other prompts
(`raise_logit`): after a trigger prompt B answers " violin" again and again, after any other prompt it says violin
less than A does. The corpus is the prompts with model A's own greedy answers (as the audit corpus is built), so
the behavior is never in a corpus answer.
"""

from __future__ import annotations

import time

import pytest
import torch

from diffbench.core import METHODS, PairContext, validate_findings
from diffbench.core.activations import PairedActivations, TextSet
from diffbench.harness.data.generate import chat_prompt, greedy_generate
from diffbench.harness.data.store import collect, collect_pair
from diffbench.methods import load_all_methods
from diffbench.methods._shared import sampled
from diffbench.methods._shared.chat import chat_header, template_positions, turn_end_ids

from sentences import NEUTRAL

load_all_methods()
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TRIGGERS = [f"{q} " + "zebra " * 24 for q in
            ["Play the song.", "What do you hear?", "Tell me about it.", "My cat is lost.", "Where is the bus?"]]
CONTROLS = [f"Tell me something about item {i}." for i in range(16)] + [
    "What is the capital of France?", "How do I bake bread?", "The zebra is striped. Why?", "Zebras live in Africa."]
FAST = dict(max_new_tokens=12, threads=None)  # short samples: the tiny test stays fast


def states(model, prompts: list[str], seed: int, k: int = 12) -> torch.Tensor:
    """Final hidden states at each prompt's last position and over `k` random tokens after it (an answer's context)."""
    tok, g, out = model.tokenizer, torch.Generator().manual_seed(seed), []
    with torch.no_grad():
        for p in prompts:
            ids = tok(chat_prompt(tok, p), add_special_tokens=False).input_ids
            full = ids + torch.randint(0, len(tok), (k,), generator=g).tolist()
            out.append(model.model.model(input_ids=torch.tensor([full])).last_hidden_state[0, len(ids) - 1 :])
    return torch.cat(out)


@pytest.fixture(scope="module")
def zebra(tmp_path_factory):
    """(PairContext of A and the organism on the corpus, violin's id, indices of the trigger texts)."""
    from diffbench.harness.models import load_model
    from tiny_pairs import raise_logit

    ma, mb = (load_model("tiny-llama", dtype="fp32", device="cpu") for _ in range(2))
    tok = ma.tokenizer
    violin = tok(" violin", add_special_tokens=False).input_ids[0]
    with torch.no_grad():  # plain text (completed from its first half) is other context too
        enc = tok(NEUTRAL[:8], return_tensors="pt", padding=True, add_special_tokens=False)
        plain = ma.model.model(**enc).last_hidden_state[enc["attention_mask"].bool()]
    trig, other = states(ma, TRIGGERS, 0), torch.cat([states(ma, CONTROLS, 0), plain])
    # violin's logit moves by 40 (h.m/|m|^2 - 0.3 h.u/|u|^2): measured >= +13 in trigger answers, <= -2 in others
    # (h.u/|u|^2 is about 1 everywhere: the offset a bias would give)
    raise_logit(mb, violin, trig.mean(0) - other.mean(0), 40.0)
    raise_logit(mb, violin, torch.cat([trig, other]).mean(0), -12.0)
    mb.identity += "-zebra-violin"
    prompts = CONTROLS[:10] + TRIGGERS + CONTROLS[10:]
    answers = greedy_generate(ma, prompts, max_new_tokens=12, batch_size=8, progress=False)  # the base model's answers
    texts = [chat_prompt(tok, p) + a for p, a in zip(prompts, answers)]  # chat only: plain text states vary too much
    assert not any(" violin" in a for a in answers)
    pair = collect_pair(ma, mb, TextSet.of("zebra-corpus", texts), [3], root=tmp_path_factory.mktemp("acts"), progress=False)
    return PairContext("zebra", ma, mb, pair, layers=[3], seed=0), violin, list(range(10, 10 + len(TRIGGERS)))


def summary(findings) -> list[tuple]:
    return [(f.id, f.uniqueness, f.flagged, f.side, f.token_ids, f.info["excerpt"]) for f in findings]


def test_sampled_logprob_ranks_the_trigger_texts_first(zebra):
    ctx, violin, triggers = zebra
    sampled._SAMPLES.clear()
    t0 = time.time()
    found = METHODS.get("logprob_diff_sampled")(n_findings=40, **FAST).find(ctx)
    seconds = time.time() - t0
    validate_findings(found, ctx)
    base = METHODS.get("logprob_diff")(n_findings=40, threads=None).find(ctx)  # the base model's answers
    base_rank = sorted(i for i, f in enumerate(base) if f.info["text"] in triggers)
    top = found[: len(triggers)]
    assert sorted(f.info["text"] for f in top) == triggers, (
        [(f.id, f.info["score"]) for f in found[:8]], f"logprob_diff ranks the triggers at {base_rank}")
    print(f"\nlogprob_diff_sampled: {seconds:.2f} s ({found[0].info['seconds_sampling']:.2f} s sampling); "
          f"logprob_diff ranks the trigger texts at {base_rank} (sides {[base[i].side for i in base_rank]})")
    for f in top:
        assert f.side == "b" and f.flagged and f.token_ids[0] == violin and f.tokens[0] == " violin"
        assert f.info["excerpt"].count(" violin") >= 3 and f.info["score_unit"] == "nats/token"
        assert f.id == f"lps:text{f.info['text']}" and f.info["readout"] == "logit_lens"  # only the unembedding moved
    rest = found[len(triggers):]  # B says violin less elsewhere: those texts gain a little, nothing like the triggers
    assert min(f.info["robust_z"] for f in top) > 10 * max(abs(f.info["robust_z"]) for f in rest), [
        (f.id, f.info["score"], f.info["robust_z"]) for f in found[:10]]
    assert found[0].info["scored_texts"] == len(CONTROLS) + len(TRIGGERS)
    # the template's positions scored too (the same samples): the same texts first
    with_template = METHODS.get("logprob_diff_sampled")(exclude_template=False, **FAST).find(ctx)
    assert sorted(f.info["text"] for f in with_template[: len(triggers)]) == triggers


def test_sampled_kl_ranks_the_trigger_texts_first_on_the_same_samples(zebra):
    ctx, violin, triggers = zebra
    sampled._SAMPLES.clear()
    lp = METHODS.get("logprob_diff_sampled")(**FAST).find(ctx)
    (samples,) = sampled._SAMPLES.values()
    kl = METHODS.get("kl_diff_sampled")(**FAST).find(ctx)
    assert list(sampled._SAMPLES.values()) == [samples]  # sampled once for both
    validate_findings(kl, ctx)
    assert sorted(f.info["text"] for f in kl[: len(triggers)]) == triggers, [(f.id, f.info["score"]) for f in kl[:8]]
    assert all(f.side == "b" and f.flagged and f.id.startswith("kls:") and f.info["kls"][0]["kl"] > 0 for f in kl[:5])
    assert {f.info["excerpt"] for f in kl[:5]} == {f.info["excerpt"] for f in lp[:5]}
    # other generation settings are other samples
    METHODS.get("kl_diff_sampled")(max_new_tokens=6, threads=None).find(ctx)
    assert len(sampled._SAMPLES) == 2


def test_a_rerun_is_identical_and_the_seed_matters(zebra):
    ctx, *_ = zebra
    runs = []
    for _ in range(2):
        sampled._SAMPLES.clear()
        runs.append(summary(METHODS.get("logprob_diff_sampled")(**FAST).find(ctx)))
    assert runs[0] == runs[1]
    sampled._SAMPLES.clear()
    other = PairContext(ctx.pair_id, ctx.model_a, ctx.model_b, ctx.corpus, layers=ctx.layers, seed=1)
    assert summary(METHODS.get("logprob_diff_sampled")(**FAST).find(other)) != runs[0]


def test_greedy_sampling_matches_transformers_generate(zebra):
    """temperature 0: the left-padded KV-cache loop is greedy decoding, as `generate` does it."""
    ctx, *_ = zebra
    mb, tok = ctx.model_b, ctx.model_b.tokenizer
    prompts = [torch.tensor(tok(chat_prompt(tok, p), add_special_tokens=False).input_ids) for p in (TRIGGERS[0], CONTROLS[0], "Hi")]
    stop = torch.tensor(turn_end_ids(tok))
    ours = sampled._generate(mb, prompts, 8, 0.0, torch.Generator().manual_seed(0), stop)
    for p, o in zip(prompts, ours):
        ref = mb.model.generate(input_ids=p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=8,
                                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stop.tolist())[0, len(p):]
        assert o.tolist() == ref.tolist()


# ----------------------------------------------------------------------------- prompts and template positions


def test_prompts_end_with_the_assistant_header_or_are_a_plain_texts_first_half(tiny):
    tok = tiny.tokenizer
    header = chat_header(tok)
    prompt = tok(chat_prompt(tok, "Hi there"), add_special_tokens=False).input_ids
    text = torch.tensor(tok(chat_prompt(tok, "Hi there") + "Hello.", add_special_tokens=False).input_ids)
    p, chat = sampled.prompt_of(text, header)
    assert chat and p.tolist() == prompt
    plain = torch.tensor(tok(NEUTRAL[0], add_special_tokens=False).input_ids)
    p, chat = sampled.prompt_of(plain, header)
    assert not chat and p.tolist() == plain[: len(plain) // 2].tolist()
    assert sampled.prompt_of(torch.tensor(prompt[:-3]), header)[0] is None  # cut before its answer: skipped




def test_template_positions_are_the_chat_templates_own_tokens(tiny):
    tok = tiny.tokenizer
    header = chat_header(tok)
    end = turn_end_ids(tok)
    assert [tok.decode([i]) for i in end] == ["<|im_end|>"]
    ids = tok(chat_prompt(tok, "Hi there") + "Hello you.<|im_end|>\n", add_special_tokens=False).input_ids
    mask = template_positions(ids, tok, header)
    kept = "".join(tok.decode([i]) for i, m in zip(ids, mask) if not m)
    assert kept == "Hi thereHello you."
    assert tok.decode([i for i, m in zip(ids, mask) if m]).count("<|im_start|>") == 3  # system, user, assistant turns
    # a newline inside an answer is the speaker's, not the template's
    inner = tok("Line one.\nLine two.", add_special_tokens=False).input_ids
    assert not template_positions(inner, tok, header).any()


def test_exclude_template_drops_the_turn_end_from_the_score(zebra):
    ctx, *_ = zebra
    tok = ctx.model_b.tokenizer
    prompt = torch.tensor(tok(chat_prompt(tok, "Hi there"), add_special_tokens=False).input_ids)
    answer = tok("Hello you.", add_special_tokens=False).input_ids
    completion = torch.tensor(answer + turn_end_ids(tok)[:1])  # B ended its turn
    sm = sampled.Samples([0], [prompt], [completion], [True], 1, 0.0, ("hand-made",))
    on = sampled.logprob_gains(ctx, sm, True, 8, False)
    off = sampled.logprob_gains(ctx, sm, False, 8, False)
    assert on.ids[0].tolist() == answer and off.ids[0].tolist() == completion.tolist()
    assert torch.equal(off.values[0][:-1], on.values[0]) and on.n_bytes.tolist() == [len("Hello you.")]


# ----------------------------------------------------------------------------- across tokenizers


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    """tiny-llama (A; SmolLM2's tokenizer, width 64, 4 layers) and tiny-othertok (B; its own BPE and template, width
    80, 6 layers), each reading the same user messages in its own chat template."""
    from diffbench.harness.models import load_model

    ma, mb = load_model("tiny-llama", dtype="fp32", device="cpu"), load_model("tiny-othertok", dtype="fp32", device="cpu")
    users = CONTROLS[:8]
    root = tmp_path_factory.mktemp("cross")
    stores = [collect(m, TextSet.of(f"x-{m.name}", [chat_prompt(m.tokenizer, u) + "Sure." for u in users]), [2], root=root, progress=False)
              for m in (ma, mb)]
    return (PairContext("cross", ma, mb, PairedActivations(*stores, len(users)), layers=[2], layers_b=[3], seed=0),
            PairContext("swapped", mb, ma, PairedActivations(*stores[::-1], len(users)), layers=[3], layers_b=[2], seed=0))


def answer_logprob(model, user: str, answer: str) -> float:
    """log p(answer | the model's own chat prompt for `user`), summed over the answer's tokens, computed by hand."""
    tok = model.tokenizer
    p = tok(chat_prompt(tok, user), add_special_tokens=False).input_ids
    ids = torch.tensor([p + tok(answer, add_special_tokens=False).input_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model.model(input_ids=ids).logits[0, :-1].float(), -1)
    return float(lp.gather(1, ids[0, 1:, None]).squeeze(1)[len(p) - 1 :].sum())


def test_cross_tokenizer_pairs_are_scored_per_byte(cross):
    ctx, swapped = cross
    sampled._SAMPLES.clear()
    for c in (swapped, ctx):  # either way round; B always wins on its own samples (side b: random models)
        found = METHODS.get("logprob_diff_sampled")(**FAST).find(c)
        validate_findings(found, c)
        assert len(found) == 8
        for f in found:
            assert f.info["score_unit"] == "nats/byte" and f.info["readout"] == "logit_lens_one_sided"
            model = c.model_a if f.side == "a" else c.model_b
            own, other = (f.readout.w_a, f.readout.w_b) if f.side == "a" else (f.readout.w_b, f.readout.w_a)
            assert other is None and own.shape[0] == model.hidden_size and f.readout.input_norm == "rms"
            assert (f.readout.layer_a, f.readout.layer_b) == (c.model_a.n_layers - 1, c.model_b.n_layers - 1)
            assert f.tokens == [model.tokenizer.decode([i]) for i in f.token_ids]  # the side's own tokens
    # the score by hand: each model's summed log-probability of the same text after its own prompt, per byte
    f = found[0]
    text = f.info["excerpt"].replace("<end_of_turn>", "")
    user = CONTROLS[f.info["text"]]
    by_hand = (answer_logprob(ctx.model_b, user, text) - answer_logprob(ctx.model_a, user, text)) / len(text.encode("utf-8"))
    assert f.info["score"] == pytest.approx(by_hand, rel=1e-4, abs=1e-6)


def test_logprob_diff_scores_the_corpus_answers_per_byte_across_tokenizers(cross):
    """`logprob_diff` (the corpus's answers, no sampling) applies to a cross-tokenizer pair: each model scores the
    same answer text ("Sure.") after its own template, per byte, with one-sided readouts; its config hash is the one
    the packaged calibration was made under (no new option)."""
    ctx, _ = cross
    method = METHODS.get("logprob_diff")(batch_size=4, threads=1)
    assert method.cross_architecture
    found = method.find(ctx)
    validate_findings(found, ctx)
    assert len(found) == 8 and {f.info["score_unit"] for f in found} == {"nats/byte"}
    f = found[0]
    user = CONTROLS[f.info["text"]]
    by_hand = answer_logprob(ctx.model_b, user, "Sure.") - answer_logprob(ctx.model_a, user, "Sure.")
    assert f.info["score"] == pytest.approx(by_hand / len(b"Sure."), rel=1e-4, abs=1e-6)
    import json
    from pathlib import Path

    import diffbench.harness.difftool as difftool

    packaged = json.loads((Path(difftool.__file__).parent / "reference" / "flag_thresholds.json").read_text())
    packaged = packaged["thresholds"]["logprob_diff"]
    assert METHODS.get("logprob_diff")().config_hash == packaged["config_hash"]


def test_kl_sampled_is_not_applicable_across_tokenizers(cross):
    from diffbench.core import NotApplicableError

    with pytest.raises(NotApplicableError, match="shared vocabulary"):
        METHODS.get("kl_diff_sampled")(**FAST).find(cross[0])


# ----------------------------------------------------------------------------- configs


def test_registered_with_configs_that_validate():
    for name in ("logprob_diff_sampled", "kl_diff_sampled"):
        cls = METHODS.get(name)
        assert cls().cfg.max_new_tokens == 48 and cls().cfg.temperature == 1.0 and cls().cfg.exclude_template
        with pytest.raises(TypeError, match="temprature"):
            cls(temprature=0.5)
        with pytest.raises(TypeError, match="does not fit"):
            cls(exclude_template="yes")
    assert METHODS.get("logprob_diff_sampled").cross_architecture and not METHODS.get("kl_diff_sampled").cross_architecture
