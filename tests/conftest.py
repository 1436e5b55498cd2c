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


# -- the tiny suite, run once per test session (tests/test_pipeline.py, tests/test_faults.py) ----------------------

TINY = ["model=tiny-llama", "suite=tiny", "plant.steps=12", "plant.gate.max_new_tokens=6", "plant.gate.kl_texts=4",
        "collect.layers=[2]", "progress=false", "scoring.bootstrap=50"]


def make_cfg(run_dir, extra=()):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("config", overrides=[*TINY, f"run_dir={run_dir}", *extra])


def _fault_methods():
    """Methods that misbehave on purpose; the run must record each as failed and go on."""
    from diffbench.core import Finding, Method, Readout, register_method

    @register_method
    class Boom(Method):
        name = "test_boom"  # raises

        def find(self, ctx):
            raise RuntimeError("boom")

    @register_method
    class Exits(Method):
        name = "test_exits"  # calls sys.exit

        def find(self, ctx):
            raise SystemExit(3)

    @register_method
    class WrongWidth(Method):
        name = "test_wrong_width"  # a readout of the wrong width: caught before saving, not in the score stage

        def find(self, ctx):
            return [Finding("w", 1.0, True, Readout(ctx.middle_layer, ctx.middle_layer, w_b=torch.ones(ctx.model_b.hidden_size + 1)))]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny suite's whole pipeline with every shipped method and the three misbehaving ones."""
    from omegaconf import open_dict

    from diffbench.harness import pipeline

    _fault_methods()
    run_dir = tmp_path_factory.mktemp("run")
    cfg = make_cfg(run_dir)
    with open_dict(cfg):
        cfg.method["boom"] = {"name": "test_boom", "params": {}}
        cfg.method["exits"] = {"name": "test_exits", "params": {}}
        cfg.method["wrong_width"] = {"name": "test_wrong_width", "params": {}}
    pipeline.run(cfg, run_dir, ["plant", "collect", "diff", "score", "report"])
    return run_dir, cfg
