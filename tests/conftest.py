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


@pytest.fixture(scope="module")
def output_pair(tmp_path_factory):
    """The output plant (test_baselines.py, test_logprob_diff.py): tiny-llama (A) and a copy (B) whose untied
    unembedding row of " violin" is raised along A's mean final hidden state on neutral text, so that B raises
    violin's logit and nothing else; (PairContext on the neutral texts at residual index 2, violin's token id)."""
    from diffbench.core import PairContext
    from diffbench.core.activations import TextSet
    from diffbench.harness.models import load_model
    from diffbench.harness.data.store import collect_pair
    from sentences import NEUTRAL
    from tiny_pairs import raise_logit

    root = tmp_path_factory.mktemp("out")
    ma, mb = (load_model("tiny-llama", dtype="fp32", device="cpu") for _ in range(2))
    tok = ma.tokenizer
    violin = tok(" violin", add_special_tokens=False).input_ids[0]
    assert all(violin not in tok(t, add_special_tokens=False).input_ids for t in NEUTRAL)
    # mean final (normed) hidden state on the audit corpus: raising W_U[violin] along it raises violin's logit
    enc = tok(NEUTRAL[:16], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        h = ma.model.model(**enc).last_hidden_state[enc["attention_mask"].bool()]
    raise_logit(mb, violin, h[1:].mean(0), 8.0)  # untied: inputs unchanged
    mb.identity += "-violin"
    pair = collect_pair(ma, mb, TextSet.of("corpus-test", NEUTRAL), [2], root=root / "acts", progress=False)
    return PairContext("out", ma, mb, pair, layers=[2], seed=0), violin


# -- the tiny suite, run once per test session (tests/test_pipeline.py, tests/test_faults.py) ----------------------

TINY = ["model=tiny-llama", "suite=tiny", "dtype=fp32", "plant.steps=12", "plant.gate.max_new_tokens=6", "plant.gate.kl_texts=4",
        "collect.layers=[2]", "progress=false", "scoring.bootstrap=50"]


def make_cfg(run_dir, extra=()):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("config", overrides=[*TINY, f"run_dir={run_dir}", *extra])


def _fault_methods():
    """Methods that misbehave on purpose; the run must record each as failed and go on. Registered once per session
    (the tiny run uses the first three; tests/test_faults.py runs test_os_exit on its own)."""
    from diffbench.core import METHODS, Finding, Method, Readout, register_method

    if "test_boom" in METHODS:
        return

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

    @register_method
    class OsExit(Method):
        name = "test_os_exit"  # ends the process at once, as os._exit does (no exception, no cleanup)

        def find(self, ctx):
            os._exit(0)


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


def pytest_collection_modifyitems(config, items):
    """Tests that use the tiny run go first, so it is built on the session's empty cache. Its organisms train on the
    base model's self-distilled answers, cached per prompt and generated in batches of whatever prompts are missing;
    a prompt's answer can change with its batch (padding moves the last bits), so a tiny run built after other tests
    filled that cache is a different run, and the golden test would depend on which tests ran before it."""
    items.sort(key=lambda item: "tiny_run" not in getattr(item, "fixturenames", ()))
