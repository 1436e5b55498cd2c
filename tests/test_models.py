import time

import pytest
import torch

from diffbench.harness.models import ModelNotAvailableError, load_model
from diffbench.core.model import resolve_layer
from diffbench.core.registry import UnknownNameError


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotAvailableError, match="unknown model 'smollm-135m'.*smollm2-135m"):
        load_model("smollm-135m")


def test_missing_path_says_what_to_put_there(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ModelNotAvailableError, match="config.json is missing"):
        load_model(str(tmp_path / "ckpt"))


def test_missing_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3") else real(name, *a))
    with pytest.raises(ModelNotAvailableError, match=r"\.\[gemma\]"):
        load_model("gemma3-270m")


def test_tiny_model_is_deterministic_and_loads_by_path(tiny):
    from diffbench.harness.models import checkpoint_dir

    path, _ = checkpoint_dir("tiny-llama")
    again = load_model(str(path), dtype="fp32")
    for (n, p), (_, q) in zip(tiny.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n
    assert tiny.tokenizer.chat_template  # real tokenizer, chat template included


def test_layer_resolution():
    assert resolve_layer(0.5, 30) == 15
    assert resolve_layer(3, 30) == 3
    assert resolve_layer(-1, 30) == 29
    with pytest.raises(ValueError):
        resolve_layer(30, 30)
    with pytest.raises(ValueError):
        resolve_layer(1.5, 30)


def test_registry_suggests_close_names():
    from diffbench.methods import load_all_methods
    from diffbench.core import METHODS

    load_all_methods()
    with pytest.raises(UnknownNameError, match="Did you mean 'mean_diff'"):
        METHODS.get("mean_dif")


@pytest.mark.slow
def test_smollm2_from_pypi_package_and_warm_load_under_5s():
    m = load_model("smollm2-135m", device="cpu")  # cold: dequantize + cache (~25 s)
    assert m.n_layers == 30 and m.hidden_size == 576
    t = time.time()
    m2 = load_model("smollm2-135m", device="cpu")
    assert time.time() - t < 5.0
    assert m2.identity == m.identity
    ids = m2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        nxt = m2.model(ids).logits[0, -1].argmax()
    assert "Paris" in m2.tokenizer.decode([int(nxt)])
