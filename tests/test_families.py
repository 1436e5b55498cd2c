"""Model families: a third architecture (a tiny random Qwen2) works through the family registry: blocks,
residual capture, logit lens with the final norm's gain, and LoRA on the family's targets."""

import pytest
import torch
from torch import nn

from diffbench.core.families import FAMILIES, family_of
from diffbench.core.model import LoadedModel
from diffbench.harness.models import load_tokenizer


@pytest.fixture(scope="module")
def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = load_tokenizer("tiny-llama")  # SmolLM2's tokenizer, extracted from the packaged GGUF
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = Qwen2ForCausalLM(cfg).eval()
    return LoadedModel("tiny-qwen2", "tiny-qwen2-test", model, tok)


def test_families_ship_llama_gemma3_qwen2():
    assert {"llama", "gemma3", "qwen2"} <= set(FAMILIES.names())


def test_qwen2_blocks_capture_the_residual_stream(tiny_qwen2):
    from diffbench.core.capture import capture_residuals

    m = tiny_qwen2
    assert family_of(m.model).name == "qwen2" and len(m.decoder_layers()) == 4
    ids = torch.tensor([m.tokenizer("a short text about capture", add_special_tokens=False).input_ids])
    mask = torch.ones_like(ids)
    got = capture_residuals(m, ids, mask, [1, 3])
    with torch.no_grad():
        ref = m.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in (1, 3):
        torch.testing.assert_close(got[layer], ref[layer])


def test_qwen2_logit_lens_folds_the_final_norm(tiny_qwen2):
    from diffbench.core.lens import final_norm_gain, lens_ids

    m = tiny_qwen2
    with torch.no_grad():
        m.model.model.norm.weight.copy_(torch.linspace(0.5, 1.5, 64))
    torch.testing.assert_close(final_norm_gain(m), m.model.model.norm.weight.float())
    v = torch.randn(64)
    expect = ((v * m.model.model.norm.weight) @ m.model.lm_head.weight.t()).topk(5).indices.tolist()
    assert lens_ids(m, v, k=5)[0] == expect


def test_qwen2_lora_uses_the_family_targets(tiny_qwen2):
    from peft import LoraConfig, get_peft_model

    fam = family_of(tiny_qwen2.model)
    import copy

    peft = get_peft_model(copy.deepcopy(tiny_qwen2.model), LoraConfig(r=2, target_modules=list(fam.lora_targets)))
    adapted = {n.split(".")[-1] for n, mod in peft.named_modules() if hasattr(mod, "lora_A")}
    assert adapted == set(fam.lora_targets)


def test_gemma_norm_gain_is_one_plus_w():
    norm = nn.Module()
    norm.weight = nn.Parameter(torch.zeros(3))
    assert FAMILIES.get("gemma3").norm_gain(norm).tolist() == [1.0, 1.0, 1.0]
    assert FAMILIES.get("llama").norm_gain(norm).tolist() == [0.0, 0.0, 0.0]


def test_an_unknown_architecture_is_one_clear_error():
    class Cfg:
        model_type = "mamba"

    class M(nn.Module):
        config = Cfg()

    with pytest.raises(ValueError, match="no model family for model_type 'mamba'.*core/families"):
        family_of(M())
