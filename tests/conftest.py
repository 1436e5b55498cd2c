import os
import tempfile
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are all small ops: on a shared 2-core machine one thread is ~10x faster than two.
    Modules of tiny-model tests opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
