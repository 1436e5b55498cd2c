"""logprob_diff on tiny models whose correct answer is known by construction.

* output plant: model B raises the logit of " violin" and nothing else (`tiny_pairs.raise_logit`, as the
  `output_pair` fixture of conftest.py). The fixture raises it along the mean hidden state of plain neutral
  text, where B then predicts " violin" almost everywhere (every plain text loses on average), and hardly at
  all on chat text; `violin_chat` raises it along the states that predict " violin" in chat answers (model A
  is the fixture's). On a chat corpus with " violin" in some answers, in some prompts only (prompt tokens are
  not response: those texts must not gain) and in no plain text, the answers with " violin" are the top
  findings, flagged, with " violin" first.
* a pair that differs a little everywhere (`tiny_pairs.perturbed_pair`): the mean-difference readout and
  the direction agree on both sides.
"""

from __future__ import annotations

import json

import pytest
import torch

from diffbench.core import METHODS, NotApplicableError, PairContext, save_findings, validate_findings
from diffbench.core.activations import TextSet
from diffbench.core.lens import lens_ids
from diffbench.harness.data.generate import chat_prompt
from diffbench.harness.data.store import collect_pair
from diffbench.methods import load_all_methods
from diffbench.methods._shared.chat import ChatHeader, chat_header, response_start

from sentences import NEUTRAL, SENTENCES

load_all_methods()
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

VIOLIN_ANSWERS = ["I play the violin every single morning.", "My sister bought a violin in the old town.",
                  "The violin sounded lovely at the concert.", "He practised the violin for three hours."]
VIOLIN_PROMPTS = ["Do you like the violin?", "Is the violin hard to learn?", "Who made the first violin?",
                  "What does a violin sound like?"]


def chat(tok, user: str, answer: str) -> str:
    return chat_prompt(tok, user) + answer


def corpus(tok) -> tuple[list[str], list[int], list[int]]:
    """(texts, indices of texts with " violin" in the answer, indices with it in the prompt only)."""
    texts = [chat(tok, f"Tell me something about item {i}.", s) for i, s in enumerate(SENTENCES[:16])]
    in_answer = list(range(len(texts), len(texts) + len(VIOLIN_ANSWERS)))
    texts += [chat(tok, "Tell me about your day.", a) for a in VIOLIN_ANSWERS]
    in_prompt = list(range(len(texts), len(texts) + len(VIOLIN_PROMPTS)))
    texts += [chat(tok, p, s) for p, s in zip(VIOLIN_PROMPTS, SENTENCES[16:])]
    return texts + NEUTRAL[:16], in_answer, in_prompt


def ctx_on(ma, mb, texts, root, layer=2, pair_id="lp") -> PairContext:
    pair = collect_pair(ma, mb, TextSet.of("lp-corpus", texts), [layer], root=root, progress=False)
    return PairContext(pair_id, ma, mb, pair, layers=[layer], seed=0)


@pytest.fixture(scope="module")
def violin_chat(output_pair, tmp_path_factory):
    from diffbench.harness.models import load_model
    from tiny_pairs import raise_logit

    ma, violin = output_pair[0].model_a, output_pair[1]
    tok = ma.tokenizer
    texts, in_answer, in_prompt = corpus(tok)
    with torch.no_grad():  # the final hidden states that predict " violin" in the answers
        hs = []
        for i in in_answer:
            ids = torch.tensor([tok(texts[i], add_special_tokens=False).input_ids])
            at = (ids[0] == violin).nonzero().squeeze(1) - 1
            hs.append(ma.model.model(input_ids=ids).last_hidden_state[0, at])
    mb = load_model("tiny-llama", dtype="fp32", device="cpu")
    raise_logit(mb, violin, torch.cat(hs).mean(0), 8.0)
    mb.identity += "-violin-chat"
    return ctx_on(ma, mb, texts, tmp_path_factory.mktemp("lp")), violin, texts, in_answer, in_prompt


# ----------------------------------------------------------------------------- response start


def test_response_start_is_right_after_the_assistant_header(tiny):
    tok = tiny.tokenizer
    header = chat_header(tok)
    assert header is not None and tok.decode(list(header.ids)) == "<|im_start|>assistant\n"
    prompt = chat_prompt(tok, "Do you like the violin?")
    ids = tok(prompt + "Yes, it is lovely.", add_special_tokens=False).input_ids
    n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
    start = response_start(ids, header)
    assert start == n_prompt and tok.decode(ids[start:]) == "Yes, it is lovely."
    assert tok.decode(ids[start - len(header.ids) : start]) == "<|im_start|>assistant\n"
    # the last header counts: an earlier assistant turn is context, not the response
    two = tok(prompt + "Yes.<|im_end|>\n" + prompt + "No.", add_special_tokens=False).input_ids
    assert tok.decode(two[response_start(two, header):]) == "No."


def test_text_without_header_is_all_response(tiny):
    tok = tiny.tokenizer
    header = chat_header(tok)
    plain = tok(SENTENCES[0], add_special_tokens=False).input_ids
    assert response_start(plain, header) == 1  # every position with a prediction
    assert response_start(plain, None) == 1  # a tokenizer without a chat template
    assert response_start(plain[:1], header) == 1  # a one-token text: nothing to score
    # a chat text cut (max_length) before its assistant header holds no answer at all
    cut = tok(chat_prompt(tok, "Tell me a long story."), add_special_tokens=False).input_ids[:-3]
    assert response_start(cut, header) == len(cut)
    # the header's trailing whitespace merged into the answer's first token: start after the rest of the header
    merged = ChatHeader(ids=(6, 7, 42), core=(6, 7), turn=None)
    assert response_start([5, 6, 7, 99, 8], merged) == 3 and response_start([5, 6, 7, 42, 8], merged) == 4


# ----------------------------------------------------------------------------- output plant


def test_logprob_diff_ranks_the_answers_with_the_boosted_token_first(violin_chat):
    ctx, violin, texts, in_answer, in_prompt = violin_chat
    findings = METHODS.get("logprob_diff")(n_findings=len(texts)).find(ctx)
    assert len(findings) == len(texts)  # every text scored (n_texts=None: all of them)
    assert [f.uniqueness for f in findings] == sorted((f.uniqueness for f in findings), reverse=True)
    by_text = {f.info["text"]: f for f in findings}
    top = findings[: len(in_answer)]
    assert sorted(f.info["text"] for f in top) == in_answer, [(f.id, f.info["score"]) for f in findings[:8]]
    for f in top:
        assert f.side == "b" and f.info["score"] > 0 and f.flagged and f.id == f"lp:text{f.info['text']}"
        assert f.token_ids[0] == violin and f.tokens[0] == " violin" and f.info["gains"][0]["token"] == " violin"
        assert f.info["gains"][0]["gain"] > 5 and all(g["gain"] > 0 for g in f.info["gains"])
        assert len(set(f.token_ids)) == len(f.token_ids) <= 10
        assert f.info["excerpt"] == texts[f.info["text"]].split("<|im_start|>assistant\n")[-1]
        assert f.info["n_response_tokens"] == len(ctx.model_a.tokenizer(f.info["excerpt"], add_special_tokens=False).input_ids)
        # only the unembedding differs, so the residual streams agree: the readout is violin's logit lens
        assert f.info["readout"] == "logit_lens" and f.readout.input_norm == "rms"
        assert f.readout.layer_a == f.readout.layer_b == f.direction_layer == 3  # n_layers - 1
        assert lens_ids(ctx.model_b, f.readout.w_b, k=1)[0][0] == violin
        assert torch.equal(f.readout.w_a, -f.readout.w_b)
    # " violin" in the prompt only: not a response token, so those texts lose (B's other tokens lose a little)
    for t in in_prompt:
        f = by_text[t]
        assert f.info["score"] < 0 and f.side == "a" and violin not in f.token_ids and not f.flagged
    # the robust z: the planted texts stand far out; the rest of this small, two-format corpus is noise
    z_planted = min(f.info["robust_z"] for f in top)
    assert z_planted > 20 * max(abs(f.info["robust_z"]) for f in findings[len(top):])
    # plain texts (no header) are scored on every position >= 1
    plain = by_text[len(texts) - 1]
    assert plain.info["n_response_tokens"] == len(ctx.model_a.tokenizer(texts[-1], add_special_tokens=False).input_ids) - 1


def test_logprob_diff_is_valid_deterministic_and_json(output_pair, tmp_path):
    ctx, violin = output_pair  # plain text: B predicts " violin" almost everywhere, so every text loses
    first = METHODS.get("logprob_diff")().find(ctx)
    assert all(f.side == "a" and f.info["score"] < 0 and violin not in f.token_ids for f in first)
    validate_findings(first, ctx)
    assert len(first) == 20 and len({f.id for f in first}) == 20
    again = METHODS.get("logprob_diff")(batch_size=3).find(ctx)  # other batches: same results
    assert [(f.id, f.flagged, f.side, f.token_ids) for f in again] == [(f.id, f.flagged, f.side, f.token_ids) for f in first]
    for a, b in zip(first, again):
        assert a.uniqueness == pytest.approx(b.uniqueness, rel=1e-5, abs=1e-7)
    save_findings(tmp_path / "f", first, {})
    json.loads((tmp_path / "f.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def test_a_model_against_itself_flags_nothing(violin_chat):
    ctx, _, texts, *_ = violin_chat  # chat and plain texts
    same = PairContext("same", ctx.model_a, ctx.model_a, ctx.corpus, layers=ctx.layers)
    findings = METHODS.get("logprob_diff")(n_findings=len(texts)).find(same)
    assert len(findings) == len(texts)
    assert all(f.info["score"] == 0 and f.uniqueness == 0 and not f.flagged and f.token_ids == [] for f in findings)
    validate_findings(findings, same)


# ----------------------------------------------------------------------------- mean-difference readout


def test_readout_and_direction_agree_on_both_sides(tmp_path, tiny):
    """B differs a little everywhere: findings of both signs, each read along its text's mean difference."""
    from tiny_pairs import perturbed_pair

    texts, *_ = corpus(tiny.tokenizer)
    ctx = perturbed_pair(tmp_path, texts, layer=3)  # the final residual layer: the corpus store holds it
    findings = METHODS.get("logprob_diff")(n_findings=len(texts)).find(ctx)
    validate_findings(findings, ctx)
    assert {f.side for f in findings} == {"a", "b"}
    la, lb = ctx.corpus.load(3)
    header = chat_header(tiny.tokenizer)
    for f in findings:
        assert f.info["readout"] == "mean_difference" and (f.side == "b") == (f.info["score"] > 0)
        t = f.info["text"]
        rows = la.text_idx == t
        start = response_start(la.token_id[rows][torch.argsort(la.pos[rows])], header)
        rows &= la.pos >= start
        d = (lb.acts[rows] - la.acts[rows]).mean(0)
        oriented = d if f.side == "b" else -d  # the direction lives in the side's model: h_side - h_other
        assert torch.allclose(f.direction, oriented, atol=1e-4)
        # one readout for both sides: high where the models differ as on this text
        assert torch.allclose(f.readout.w_b, d / d.norm(), atol=1e-4) and torch.equal(f.readout.w_a, -f.readout.w_b)
        assert float(f.readout(la.acts[rows], lb.acts[rows]).mean()) == pytest.approx(float(d.norm()), rel=1e-3)


def test_across_widths_plain_texts_are_not_applicable_with_the_reason(tmp_path, tiny):
    """Models of different widths share no residual space: logprob_diff scores chat answers per byte there
    (tests/test_output_baselines_sampled.py); plain texts without an answer to score are not applicable, saying so."""
    from diffbench.harness.models import load_model

    wide = load_model("tiny-llama-wide", dtype="fp32", device="cpu")
    from diffbench.core.activations import PairedActivations
    from diffbench.harness.data.store import collect

    ts = TextSet.of("x", SENTENCES[:4])
    a, b = collect(tiny, ts, [2], root=tmp_path, progress=False), collect(wide, ts, [2], root=tmp_path, progress=False)
    with pytest.raises(NotApplicableError, match="no audit corpus text with a chat prompt and an answer"):
        METHODS.get("logprob_diff")().find(PairContext("cross", tiny, wide, PairedActivations(a, b, 4), layers=[2]))


# ----------------------------------------------------------------------------- resumed pass


def test_a_pass_resumed_from_the_store_equals_the_pass_from_the_tokens(tmp_path, tiny):
    """Collection stored residual index 2 of both models: logprob_diff's pass starts there (blocks 2-3 and the head
    run), and gives the log-probabilities, residuals and findings of the pass from the tokens (blocks 0-3)."""
    from tiny_pairs import perturbed_pair

    from diffbench.methods._shared.outputs import Resume, _side_pass, store_sequences

    texts, *_ = corpus(tiny.tokenizer)
    ctx = perturbed_pair(tmp_path, texts, layer=2)  # block 1 differs: below the stored layer, so it must be in it
    chosen, seqs = store_sequences(ctx.corpus.a, len(texts))
    keep, starts = list(range(len(seqs))), [1] * len(seqs)
    for model, store in ((ctx.model_a, ctx.corpus.a), (ctx.model_b, ctx.corpus.b)):
        resume = Resume.of(store, model, 3)
        assert resume is not None and resume.layer == 2
        assert Resume.of(store, model, 2) is None  # nothing stored below the layer the pass captures
        full = _side_pass(model, seqs, starts, keep, 3, 4, ("full",))
        resumed = _side_pass(model, seqs, starts, keep, 3, 4, ("resumed",), False, resume, chosen)
        for i in keep:
            assert torch.allclose(resumed[0][i], full[0][i], atol=1e-5) and torch.allclose(resumed[1][i], full[1][i], atol=1e-5)
        assert all(isinstance(b, torch.nn.Module) and type(b).__name__ != "_PassThrough" for b in model.decoder_layers())
    from diffbench.methods._shared import outputs

    scores = {r: outputs.response_text_scores(outputs.response_gains(ctx, resume=r)) for r in (True, False)}
    assert torch.allclose(scores[True].scores, scores[False].scores, rtol=1e-5, atol=1e-7)
    assert torch.allclose(scores[True].diff_mean, scores[False].diff_mean, atol=1e-5)


def test_a_store_that_does_not_hold_the_pass_tokens_is_refused(tmp_path, tiny):
    from tiny_pairs import perturbed_pair

    from diffbench.methods._shared.outputs import Resume, store_sequences

    texts, *_ = corpus(tiny.tokenizer)
    ctx = perturbed_pair(tmp_path, texts, layer=2)
    chosen, seqs = store_sequences(ctx.corpus.a, len(texts))
    resume = Resume.of(ctx.corpus.a, ctx.model_a, 3)
    assert len(resume.residuals(chosen[:2], seqs[:2])[1]) == len(seqs[1])
    with pytest.raises(ValueError, match="does not hold the pass's tokens"):
        resume.residuals(chosen[:2], [seqs[1], seqs[0]])
