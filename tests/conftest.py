import os
import tempfile
from pathlib import Path

import pytest

# One cache for the whole test session (tiny models and SmolLM2's tokenizer materialise once).
# Set DIFFBENCH_TEST_CACHE to reuse a cache across sessions locally.
_CACHE = os.environ.get("DIFFBENCH_TEST_CACHE") or tempfile.mkdtemp(prefix="diffbench-test-cache-")
os.environ["DIFFBENCH_CACHE"] = _CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def cache_root() -> Path:
    return Path(_CACHE)


@pytest.fixture(scope="session")
def tiny():
    from diffbench.harness.models import load_model

    return load_model("tiny-llama", dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def tiny_bf16():
    from diffbench.harness.models import load_model

    return load_model("tiny-llama", dtype="bf16", device="cpu")
