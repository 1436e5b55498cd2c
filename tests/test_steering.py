"""harness/score/steering.py on the tiny model, with properties that hold by construction.

* The zebra direction: x = (W_U[zebra] - mean row of W_U) / g, g the final RMSNorm's gain. Added
  at the last residual index (n_layers - 1) with a norm far above the stream's, it dominates the
  final block's input and output (the block reads a normalised input, so its own contribution is
  bounded) and the final norm maps the stream to ~ x / rms(x), whose logits W_U (g * x) are
  largest at zebra: the test checks that precondition with a margin, then that every prompt
  answers "zebra", and that a random direction of the same norm (whose top token is checked not
  to be zebra) never does.
* Ablation: a hook shifts block n_layers-2's output by alpha * u (u the zebra direction), so the
  hooked model says zebra everywhere; ablating u there gives h + alpha u - ((h + alpha u).u) u =
  h - (h.u) u, what ablating u from the unhooked model gives, while ablating a direction w
  orthogonal to u keeps the shift (and the zebras).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.harness.data.generate import chat_prompt, greedy_generate
from diffbench.harness.score.steering import Intervention, _RowHook, behavior_rates, intervened_generate
from diffbench.tasks.detectors import RegexDetector

sys.path.insert(0, str(Path(__file__).parent))
from sentences import SENTENCES  # noqa: E402

PROMPTS = SENTENCES[:8]
ZEBRA = RegexDetector("zebra")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


class ShiftBlock:
    """Reference hook: add `v` to a block's output at every position, for every row."""

    def __init__(self, lm, block: int, v: torch.Tensor):
        def post(_mod, _inp, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h + v.to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        self.handle = lm.decoder_layers()[block].register_forward_hook(post)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def residual_max_norm(lm, layer: int) -> float:
    """Largest norm of the residual stream at index `layer` over PROMPTS' positions."""
    seen = []
    h = lm.decoder_layers()[layer - 1].register_forward_hook(lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    try:
        tok = lm.tokenizer
        with torch.inference_mode():
            for p in PROMPTS:
                lm.model(**tok(chat_prompt(tok, p), return_tensors="pt", add_special_tokens=False))
    finally:
        h.remove()
    return max(float(s.norm(dim=-1).max()) for s in seen)


@pytest.fixture(scope="module")
def zebra(tiny):
    """(zebra token id, zebra direction x, a random direction r with |r| = |x|), preconditions checked."""
    (t,) = tiny.tokenizer(" zebra", add_special_tokens=False).input_ids
    W = tiny.model.get_output_embeddings().weight.detach()
    g = tiny.model.model.norm.weight.detach()
    x = (W[t] - W.mean(0)) / g
    logits = W @ (g * x)
    top2 = logits.topk(2)
    assert top2.indices[0] == t and top2.values[1] < 0.75 * top2.values[0]  # margin over the runner-up (measured: 0.49x)
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    r = r * x.norm() / r.norm()
    r_top = int((W @ (g * r)).argmax())
    assert not ZEBRA(tiny.tokenizer.decode([r_top]))
    return t, x, r


def test_baseline_row_equals_greedy_generate_and_add_rows_equal_a_global_hook(tiny):
    """Row 0 is greedy_generate; each steered row is greedy_generate under a hook adding its vector everywhere."""
    layer = 2
    V = torch.randn(3, tiny.hidden_size, generator=torch.Generator().manual_seed(1))
    V = 0.3 * V / V.norm(dim=1, keepdim=True)  # about the stream's norm: prompt-dependent answers
    out = intervened_generate(tiny, PROMPTS, Intervention("add", layer, V), max_new_tokens=6)
    assert len(out) == 4 and all(len(row) == len(PROMPTS) for row in out)
    assert out[0] == greedy_generate(tiny, PROMPTS, max_new_tokens=6, progress=False)
    for j, v in enumerate(V):
        with ShiftBlock(tiny, layer - 1, v):
            assert out[1 + j] == greedy_generate(tiny, PROMPTS, max_new_tokens=6, progress=False)
    assert len({a for row in out[1:] for a in row}) > 3  # the rows genuinely differ (the check is not vacuous)
    # no hook is left behind
    assert all(not m._forward_hooks for m in tiny.decoder_layers())
    assert intervened_generate(tiny, PROMPTS, Intervention("add", layer, V), max_new_tokens=6, include_baseline=False) == out[1:]


def test_adding_the_zebra_direction_makes_every_prompt_say_zebra(tiny, zebra):
    _, x, r = zebra
    layer = tiny.n_layers - 1
    scale = 100 * residual_max_norm(tiny, layer) / float(x.norm())
    iv = Intervention("add", layer, torch.stack([scale * x, scale * r]))
    out = intervened_generate(tiny, PROMPTS, iv, max_new_tokens=4)
    rates = behavior_rates(out, ZEBRA)
    assert rates.shape == (3,) and rates.tolist() == [0.0, 1.0, 0.0]
    assert all(a.split() == ["zebra"] * 4 for a in out[1])


def test_ablating_a_planted_shift_removes_it_and_an_orthogonal_ablation_does_not(tiny, zebra):
    _, x, _ = zebra
    layer = tiny.n_layers - 1
    u = unit(x)
    w = torch.randn(u.shape, generator=torch.Generator().manual_seed(2))
    w = unit(w - (w @ u) * u)  # orthogonal to u
    alpha = 20 * residual_max_norm(tiny, layer)
    ablate = Intervention("ablate", layer, torch.stack([3.0 * u, w]))  # the scale of an ablated vector is irrelevant
    unhooked = intervened_generate(tiny, PROMPTS, ablate, max_new_tokens=4)
    with ShiftBlock(tiny, layer - 1, alpha * u):  # registered first, so it runs before the steering hook
        hooked = intervened_generate(tiny, PROMPTS, ablate, max_new_tokens=4)
    assert behavior_rates(hooked, ZEBRA).tolist() == [1.0, 0.0, 1.0]  # planted; u ablated; w ablated
    assert behavior_rates(unhooked, ZEBRA).tolist() == [0.0, 0.0, 0.0]
    assert hooked[1] == unhooked[1]  # ablating u undoes the shift exactly (up to rounding)


def test_rows_are_independent_of_their_batch(tiny):
    layer = 1
    V = torch.randn(2, tiny.hidden_size, generator=torch.Generator().manual_seed(3))
    V = 0.4 * V / V.norm(dim=1, keepdim=True)
    together = intervened_generate(tiny, PROMPTS, Intervention("add", layer, V), max_new_tokens=6)
    one = intervened_generate(tiny, PROMPTS, Intervention("add", layer, V[:1]), max_new_tokens=6)
    two = intervened_generate(tiny, PROMPTS, Intervention("add", layer, V[1:]), max_new_tokens=6, include_baseline=False)
    assert together == one + two
    assert together[1] != together[2]
    # batches of 5 rows mix vectors and prompts (rows go prompt by prompt) and pad differently
    assert intervened_generate(tiny, PROMPTS, Intervention("add", layer, V), max_new_tokens=6, batch_size=5) == together
    for mode in ("add", "ablate"):
        small = intervened_generate(tiny, PROMPTS, Intervention(mode, layer, V), max_new_tokens=6, batch_size=3)
        assert small == intervened_generate(tiny, PROMPTS, Intervention(mode, layer, V), max_new_tokens=6)


def test_hook_handles_tuples_decode_steps_and_ablation_algebra():
    torch.manual_seed(0)
    v = torch.randn(3, 8)
    h = torch.randn(3, 5, 8)
    add = _RowHook("add")
    add.rows = v
    assert torch.equal(add(None, None, h), h + v[:, None])
    out, extra = add(None, None, (h[:, -1:], "cache"))  # a KV-cached decode step, tuple output
    assert extra == "cache" and torch.equal(out, h[:, -1:] + v[:, None])
    abl = _RowHook("ablate")
    abl.rows = torch.cat([torch.zeros(1, 8), v[1:] / v[1:].norm(dim=1, keepdim=True)])
    res = abl(None, None, h)
    assert torch.equal(res[0], h[0])  # a zero vector is the identity (the baseline row)
    assert torch.allclose((res[1:] * abl.rows[1:, None]).sum(-1), torch.zeros(2, 5), atol=1e-5)
    add.rows = v[:2]
    with pytest.raises(RuntimeError, match="3 rows but 2 vectors"):
        add(None, None, h)


def test_validation_and_rates(tiny):
    with pytest.raises(ValueError, match="mode"):
        Intervention("scale", 1, torch.zeros(1, tiny.hidden_size))
    with pytest.raises(ValueError, match=r"\[m, d\]"):
        Intervention("add", 1, torch.zeros(tiny.hidden_size))
    with pytest.raises(ValueError, match="out of range"):
        intervened_generate(tiny, PROMPTS, Intervention("add", tiny.n_layers, torch.zeros(1, tiny.hidden_size)))
    with pytest.raises(ValueError, match="width"):
        intervened_generate(tiny, PROMPTS, Intervention("add", 1, torch.zeros(1, 7)))
    rates = behavior_rates([["a zebra", "no", "Zebra!", "x"], ["", "", "", ""]], ZEBRA)
    assert rates.dtype == np.float64 and rates.tolist() == [0.5, 0.0]


def test_hook_leaves_padding_and_the_sink_token_alone():
    """Prefill: positions up to each row's first real token (left padding, then the attention sink) are untouched;
    decode steps (one position) are always intervened on."""
    from diffbench.harness.score.steering import _RowHook

    for mode in ("add", "ablate"):
        hook = _RowHook(mode)
        hook.rows = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
        hook.first = torch.tensor([1, 0])  # row 0: one pad, sink at 1; row 1: sink at 0
        h = torch.randn(2, 4, 8)
        out = hook(None, None, (h,))[0]
        assert torch.equal(out[0, :2], h[0, :2]) and torch.equal(out[1, :1], h[1, :1])
        assert not torch.allclose(out[0, 2:], h[0, 2:]) and not torch.allclose(out[1, 1:], h[1, 1:])
        step = torch.randn(2, 1, 8)
        assert not torch.allclose(hook(None, None, step), step)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-othertok"])
def test_shared_prefill_equals_the_plain_path_at_every_layer(name):
    """The default path (blocks below the intervention run once per prompt, their KV cache repeated to every row)
    gives the plain path's continuations (every row through HF generate, left-padded, mixed over prompts) at every
    residual index, for both modes, in fp32; on models with different chat templates and end-of-turn tokens."""
    from diffbench.harness.models import load_model

    model = load_model(name, dtype="fp32", device="cpu")
    g = torch.Generator().manual_seed(5)
    for layer in range(1, model.n_layers):
        V = torch.randn(3, model.hidden_size, generator=g)
        V = 0.5 * V / V.norm(dim=1, keepdim=True)
        for mode in ("add", "ablate"):
            iv = Intervention(mode, layer, V)
            # ablation is checked on a model whose block output is shifted along the vectors (so removing one matters)
            with ShiftBlock(model, layer - 1, 2 * V.sum(0)) if mode == "ablate" else contextlib.nullcontext():
                shared = intervened_generate(model, PROMPTS, iv, max_new_tokens=6, batch_size=3)  # slices of 3 of 4
                plain = intervened_generate(model, PROMPTS, iv, max_new_tokens=6, shared_prefill=False)
            assert shared == plain, (layer, mode)
            assert len({a for row in shared for a in row}) >= 3, (layer, mode)  # rows differ: the check is not vacuous
    assert all(not m._forward_hooks for m in model.decoder_layers())


def test_shared_prefill_stops_rows_at_the_end_of_turn_token():
    """A row that emits the end-of-turn token ends there (nothing after it is decoded), as generate() does, while the
    other rows of its batch go on: one row's last-block input is pushed hard toward the eos token's logit lens
    (tiny-othertok: tiny-llama's eos is its pad token, whose embedding row is zero), the baseline row is left alone."""
    from diffbench.harness.models import load_model

    model = load_model("tiny-othertok", dtype="fp32", device="cpu")
    eos = model.tokenizer.eos_token_id
    w_u = model.model.get_output_embeddings().weight.detach()
    g = model.model.model.norm.weight.detach()
    x = (w_u[eos] - w_u.mean(0)) / g
    assert int((w_u @ (g * x)).argmax()) == eos  # precondition: the lens direction's top token is eos
    layer = model.n_layers - 1
    scale = 100 * residual_max_norm(model, layer) / float(x.norm())
    iv = Intervention("add", layer, torch.stack([scale * x]))
    shared = intervened_generate(model, PROMPTS, iv, max_new_tokens=5)
    assert shared[1] == [""] * len(PROMPTS)  # every steered row ended at its first token
    assert any(shared[0])  # unsteered rows of the same batches went on (some end early of their own accord)
    assert shared == intervened_generate(model, PROMPTS, iv, max_new_tokens=5, shared_prefill=False)
