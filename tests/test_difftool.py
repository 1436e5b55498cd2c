"""`diffbench diff` on tiny models: a same-architecture pair (tiny-llama vs tiny-llama + a random LoRA adapter) over a
user corpus, a cross-tokenizer pair, calibrated flags, steered evidence, the HTML report, and one clear error per
bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

EXE = [sys.executable, "-c", "from diffbench.harness.cli import main; main()"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A PEFT adapter folder on tiny-llama with random (non-zero) LoRA weights: model B differs everywhere a little."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from diffbench.harness.models import checkpoint_dir

    base_dir, _ = checkpoint_dir("tiny-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from diffbench.tasks.everyday import everyday_prompts

    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = [json.dumps({"prompt": p, "response": f"Here is a short answer about {p.lower()[:40]}"}) for p in everyday_prompts(40, seed=3)]
    lines.insert(5, "")  # blank lines are skipped
    lines.append(json.dumps({"text": "A plain document without a chat exchange, used as is."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def diff_cfg(out, *overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("diff", overrides=[f"out={out}", "progress=false", "collect.layers=[2]", "top=8", "evidence=2",
                                          "steer_prompts=2", "steer_tokens=4", *overrides])


@pytest.fixture(scope="module")
def diffed(adapter, corpus, tmp_path_factory):
    from diffbench.harness.difftool import tool as difftool

    out = tmp_path_factory.mktemp("diff")
    calib = out.parent / "calib.json"
    calib.write_text(json.dumps({"model": "tiny-llama", "suite": "test", "thresholds": {
        "mean_diff": {"threshold": 0.0, "n_null_findings": 10, "config_hash": ""},  # every finding clears it
        "random_directions": {"threshold": 1e9, "n_null_findings": 10, "config_hash": ""}}}))  # none does
    cfg = diff_cfg(out, "model_a=tiny-llama", f"model_b={adapter}", f"corpus={corpus}", f"calibration={calib}",
                   "method=[mean_diff,random_directions,logit_diff_tokens]")
    index = difftool.run(cfg, out)
    return out, index


def test_diff_writes_findings_evidence_and_report(diffed):
    out, index = diffed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents"] == 41 and summary["model_b"].endswith(os.path.basename(str(summary["model_b"])))
    status = {m["key"]: m for m in summary["methods"]}
    assert all(status[k]["status"] == "ok" and status[k]["n_findings"] > 0 for k in ("mean_diff", "random_directions", "logit_diff_tokens"))
    # calibrated flags follow the thresholds; a method without one says so
    assert status["mean_diff"]["n_calibrated"] == status["mean_diff"]["n_findings"]
    assert status["random_directions"]["n_calibrated"] == 0 and not status["random_directions"]["calibration"]
    assert "no reference calibration" in status["logit_diff_tokens"]["calibration"]
    rec = json.loads((out / "findings" / "mean_diff.json").read_text())
    top = rec["findings"][0]
    assert top["info"]["snippets"] and top["info"]["calibrated_flag"] == "yes"
    assert index.exists() and (out / "findings.md").exists()
    page = (out / "html" / "mean_diff--diff.html").read_text()
    assert "greedy continuations of model A" in page and "calibrated flag: clears the null threshold" in page
    assert "own flag: " in page and "<script" not in page and "http://" not in page and "https://" not in page
    # the summary first: the top findings across methods, in findings.md and the HTML index; steering's effect said
    md = (out / "findings.md").read_text()
    assert md.index("## Top findings across methods") < md.index("## Methods") and "| mean_diff (#1) |" in md
    assert ("no effect" in md or "changed " in md) and ("no effect" in page or "changed " in page)
    html = index.read_text()
    assert html.index("Top findings across methods") < html.index("Methods</h2>") and "glossary" in html
    assert str(out) not in html and str(out) not in page  # no machine path


def test_steered_continuations_change_with_a_large_direction(adapter, corpus, tmp_path):
    """The evidence is a real intervention: a direction scaled far beyond the model's residual changes the text."""
    from diffbench.harness.difftool.evidence import steering_evidence
    from diffbench.harness.models import load_model
    from diffbench.harness.difftool.usercorpus import read_corpus
    from diffbench.core import Finding, Readout

    class Run:
        key = "m"
        findings = []

    ma = load_model("tiny-llama", dtype="fp32", device="cpu")
    docs = read_corpus(corpus)
    d = torch.zeros(ma.hidden_size)
    d[0] = 1.0
    f = Finding("big", 1.0, True, Readout(2, 2, w_b=d), direction=d * 1e4, direction_layer=2)
    Run.findings = [f]

    class Paired:
        alignment = None

    import diffbench.harness.difftool.evidence as ev

    old = ev._residual_norm
    ev._residual_norm = lambda *a, **k: 1e3  # far larger than the residual stream: the continuation must change
    try:
        out = steering_evidence([Run], ma, ma, docs, Paired, k=1, n_prompts=2, max_new_tokens=4, progress=False)
    finally:
        ev._residual_norm = old
    rows = out["m"]["big"]["rows"]
    assert len(rows) == 2 and any(r["before"] != r["after"] for r in rows)
    assert out["m"]["big"]["effect"].startswith("changed ") and all(r["changed"] == (r["before"] != r["after"]) for r in rows)


def test_steering_that_changes_nothing_says_no_effect():
    from diffbench.harness.difftool.evidence import effect
    from diffbench.harness.report.html import render, finding_view

    rows = [{"prompt": "p", "before": "same", "after": "same", "changed": False}] * 2
    assert effect(rows) == "no effect: adding the direction left every continuation unchanged"
    steering = {"model": "model A (a)", "layer": 2, "scale": "1", "rows": rows, "effect": effect(rows)}
    view = finding_view(0, {"id": "x", "uniqueness": 1.0, "tokens": ["a\nb"]}, steering=steering)
    page = render("findings.html", title="t", meta=[], notes=[], findings=[view])
    assert "no effect: adding the direction left every continuation unchanged" in page and "(unchanged)" in page
    assert "a\\nb" in page  # a token holding a newline is shown escaped, on one line


def test_defaults_per_pair_kind(adapter):
    """Same architecture: the packaged reference's methods; across architectures (another width, another tokenizer): dfc
    and those of them that apply to such pairs, with the packaged calibration not applied. Decided from config.json."""
    from diffbench.harness.difftool import tool as difftool

    packaged = json.loads((difftool.PACKAGED_DIR / "default_methods.json").read_text())["methods"]
    same = diff_cfg("o", "model_a=tiny-llama", f"model_b={adapter}")
    assert list(difftool.method_configs(same)) == packaged and not difftool.pair_kind("tiny-llama", str(adapter)).cross
    calib = difftool._calibration(same)
    assert calib.flag("kl_diff", "", 1e9)[0] is True
    for other, why in (("tiny-llama-wide", "hidden_size 64 vs 96"), ("tiny-othertok", "vocab_size")):
        cfg = diff_cfg("o", "model_a=tiny-llama", f"model_b={other}")
        kind = difftool.pair_kind("tiny-llama", other)
        assert kind.cross and why in kind.why
        assert list(difftool.method_configs(cfg)) == ["dfc", "batchtopk_crosscoder", "logprob_diff"]
        calib = difftool._calibration(cfg)
        assert calib.flag("batchtopk_crosscoder", "", 1e9) == (None, "uncalibrated: the packaged thresholds come from same-architecture null pairs")
        assert "not applied" in difftool.calibration_text(calib)
    # an explicit method list is kept as given
    assert list(difftool.method_configs(diff_cfg("o", "model_a=tiny-llama", "model_b=tiny-llama-wide", "method=[mean_diff]"))) == ["mean_diff"]


def test_cross_tokenizer_pair_runs_methods_that_apply(tmp_path, corpus):
    from diffbench.harness.difftool import tool as difftool

    out = tmp_path / "x"
    cfg = diff_cfg(out, "model_a=tiny-llama", "model_b=tiny-othertok", f"corpus={corpus}", "calibration=null",
                   "method=[mean_diff,l1_crosscoder]", "collect.layers=[0.5]", "++method.l1_crosscoder.params.steps=30")
    difftool.run(cfg, out)
    status = {m["key"]: m["status"] for m in json.loads((out / "summary.json").read_text())["methods"]}
    assert status == {"mean_diff": "not_applicable", "l1_crosscoder": "ok"}
    top = json.loads((out / "findings" / "l1_crosscoder.json").read_text())["findings"][0]
    assert top["info"]["snippets"]  # in the finding's own model's tokens (test_cross_tokenizer_snippets_...)


def test_cross_tokenizer_snippets_show_the_findings_own_tokens(tiny, tmp_path):
    """Across tokenizers a row is an aligned position (i_a, i_b): a finding's snippet is the text in its own model's
    tokens (each model in its own chat template), focused on that model's token at the top aligned row, with no
    score on tokens that have no aligned row; the records have the same-tokenizer format and render."""
    import math

    from diffbench.core import Finding, Readout
    from diffbench.core.activations import PairedActivations, TextSet
    from diffbench.core.io import dumps
    from diffbench.harness.data.align import render_chat
    from diffbench.harness.report.html import snippet_view
    from diffbench.harness.models import load_model
    from diffbench.harness.report.snippets import attach_snippets
    from diffbench.harness.data.store import collect, pair_stores
    from diffbench.tasks.everyday import everyday_prompts

    other = load_model("tiny-othertok", dtype="fp32", device="cpu")
    prompts = everyday_prompts(8, seed=5)
    answers = [f"Here is a short answer about {p.lower()[:40]}, with a few more words to read." for p in prompts]
    ra, rb = ([render_chat(m.tokenizer, p, a) for p, a in zip(prompts, answers)] for m in (tiny, other))
    ta, tb = TextSet.of("snip-a", [r.text for r in ra]), TextSet.of("snip-b", [r.text for r in rb])
    la_i, lb_i = tiny.layer_index(0.5), other.layer_index(0.5)
    kw = dict(root=tmp_path, progress=False, max_length=64)
    sa, sb = collect(tiny, ta, [la_i], **kw), collect(other, tb, [lb_i], **kw)
    pair = pair_stores(sa, sb, tiny.tokenizer, other.tokenizer, ta, tb, spans_a=[r.spans for r in ra], spans_b=[r.spans for r in rb])
    assert pair.aligned
    g = torch.Generator().manual_seed(0)
    wa, wb = torch.randn(tiny.hidden_size, generator=g), torch.randn(other.hidden_size, generator=g)
    findings = [Finding("fa", 1.0, True, Readout(la_i, lb_i, w_a=wa), side="a"),
                Finding("fb", 1.0, True, Readout(la_i, lb_i, w_b=wb), side="b"),
                Finding("fab", 1.0, True, Readout(la_i, lb_i, w_a=wa, w_b=wb), side="both")]
    attach_snippets(findings, pair, None, tiny.tokenizer, 64, tokenizer_b=other.tokenizer)

    la, lb = pair.load(la_i, lb_i)
    nan_b = 0
    for f in findings:
        snips = f.info["snippets"]
        assert len(snips) == 3 and len({s["text"] for s in snips}) == 3  # (a) one per text, k of them
        lx, tok, ts = (la, tiny.tokenizer, ta) if f.side == "a" else (lb, other.tokenizer, tb)  # "both": model B's tokens
        # (b) the top snippet is at the aligned row of maximum score (position 0 of either model excluded), focused on
        # that side's token there: the side's own tokenization of its own text, tokenized independently here
        score = f.readout(la.acts, lb.acts).masked_fill((la.pos < 1) | (lb.pos < 1), float("-inf"))
        row = int(score.argmax())
        top = snips[0]
        t, pos = int(lx.text_idx[row]), int(lx.pos[row])
        ids = tok(ts.texts[t], add_special_tokens=False, truncation=True, max_length=64).input_ids
        lo = pos - top["focus"]
        assert (top["text"], top["pos"]) == (t, pos) and top["score"] == pytest.approx(float(score[row]), rel=1e-5)
        assert top["tokens"] == [tok.decode([i]) for i in ids[lo:lo + len(top["tokens"])]]
        assert top["tokens"][top["focus"]] == tok.decode([ids[pos]]) and top["scores"][top["focus"]] == top["score"]
        # tokens of the side with an aligned row carry its score; the others (no aligned row) have none
        for s in snips:
            lo = s["pos"] - s["focus"]
            rows = ((lx.text_idx == s["text"]) & (lx.pos >= lo) & (lx.pos < lo + len(s["tokens"]))).nonzero().squeeze(1)
            assert {lo + i for i, x in enumerate(s["scores"]) if not math.isnan(x)} == set(lx.pos[rows].tolist())
            nan_b += sum(math.isnan(x) for x in s["scores"]) if f.side != "a" else 0
        assert [s["score"] for s in snips] == sorted((s["score"] for s in snips), reverse=True)
    assert nan_b > 0  # B's 1k BPE splits words into pieces that only end together with A's tokens at a word's end

    # (c) the same record format as a same-tokenizer pair's (here model A's store against itself), and it renders
    same = Finding("s", 1.0, True, Readout(la_i, la_i, w_a=wa), side="a")
    attach_snippets([same], PairedActivations(sa, sa, len(ta)), ta, tiny.tokenizer, 64)
    ref = same.info["snippets"][0]
    for s in (f.info["snippets"][0] for f in findings):
        assert s.keys() == ref.keys() and all(type(s[key]) is type(ref[key]) for key in ref)
        assert 0 <= s["focus"] < len(s["tokens"]) == len(s["scores"])
        view = snippet_view(json.loads(dumps(s)))  # as saved (NaN written as null) and shown
        assert [x["focus"] for x in view["tokens"]].count(True) == 1 and view["tokens"][s["focus"]]["text"] == s["tokens"][s["focus"]]
        assert all(x["score"] == "n/a" and x["alpha"] == "0.00" for x, y in zip(view["tokens"], s["scores"]) if math.isnan(y))


@pytest.mark.parametrize("case", ["missing", "malformed", "empty", "not_object"])
def test_bad_corpus_is_one_clear_error(tmp_path, case):
    from diffbench.harness.difftool.usercorpus import CorpusFileError, read_corpus

    path = tmp_path / "c.jsonl"
    if case == "malformed":
        path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    elif case == "empty":
        path.write_text("\n  \n")
    elif case == "not_object":
        path.write_text('{"prompt": "a", "response": "b"}\n\n["x"]\n')
    with pytest.raises(CorpusFileError) as e:
        read_corpus(path)
    msg = str(e.value)
    assert {"missing": "does not exist", "malformed": "line 2", "empty": "no documents", "not_object": "line 3"}[case] in msg


def test_cli_errors_before_any_work(tmp_path, corpus):
    def run(*args):
        return subprocess.run([*EXE, "diff", *args, f"out={tmp_path}/o", "progress=false"], capture_output=True, text=True, timeout=600)

    r = run("model_a=tiny-llama")
    assert r.returncode == 2 and "model_b=" in r.stderr
    (tmp_path / "notackpt").mkdir()
    r = run("model_a=tiny-llama", f"model_b={tmp_path / 'notackpt'}")
    assert r.returncode == 2 and "config.json is missing" in r.stderr
    r = run("model_a=tiny-llama", "model_b=tiny-llama", f"corpus={tmp_path / 'nope.jsonl'}")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("model_a=tiny-llama", "model_b=tiny-othertok", f"corpus={corpus}", "method=[mean_diff,weight_svd]", "calibration=null")
    assert r.returncode == 2 and "no selected method applies" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "o").exists() or not any(p.name.endswith(".json") for p in (tmp_path / "o").iterdir())


def test_diff_report_renders_in_chromium(diffed, tmp_path):
    from browser_check import open_clean

    out, index = diffed
    checks = open_clean([index, out / "html" / "mean_diff--diff.html"], ["table.methods tr", "div.finding", "div.snippet", "table.steer tr"], tmp_path)
    overview, page = checks
    assert overview.counts["table.methods tr"] == 4  # header + three methods
    assert page.counts["div.finding"] == 8 and page.counts["div.snippet"] > 0 and page.counts["table.steer tr"] > 0
    assert "mean_diff" in page.title and (tmp_path / "mean_diff--diff.png").stat().st_size > 10_000


def test_packaged_reference_is_the_quick_reference():
    """`diffbench diff`'s shipped defaults (harness/difftool/reference/) are those of the committed quick reference:
    regenerate them with scripts/package_reference.py whenever the reference changes."""
    from pathlib import Path

    from diffbench.harness.difftool.tool import PACKAGED_DIR, default_methods

    run = Path(__file__).resolve().parents[1] / "results" / "quick-audit-smollm2-135m"
    shipped = json.loads((PACKAGED_DIR / "default_methods.json").read_text())
    assert shipped["methods"] == default_methods(run / "scores.json") and shipped["reference"] == run.name
    assert (PACKAGED_DIR / "flag_thresholds.json").read_text() == (run / "flag_thresholds.json").read_text()


def test_diff_runs_from_an_installed_copy_outside_the_checkout(tmp_path, corpus):
    """`pip install .` (here into a folder, without dependencies: the test environment has them) and `diffbench diff`
    from another folder: the shipped defaults (methods, calibration) and templates come from the package, not the
    source tree."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(root)],
                           capture_output=True, text=True, timeout=600, cwd=work)
    assert build.returncode == 0, build.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import diffbench.harness.cli as c; print(c.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=work)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr  # the installed copy, not the checkout
    r = subprocess.run([*EXE, "diff", "model_a=tiny-llama", "model_b=tiny-llama-wide", f"corpus={corpus}", "out=o",
                        "progress=false", "top=4", "evidence=0", "collect.layers=[2]"],
                       capture_output=True, text=True, env=env, cwd=work, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((work / "o" / "summary.json").read_text())
    shipped = json.loads((target / "diffbench" / "harness" / "difftool" / "reference" / "default_methods.json").read_text())
    # a cross-architecture pair (widths 64 vs 96): dfc and the packaged defaults that apply to such pairs, uncalibrated
    assert [m["key"] for m in summary["methods"]] == ["dfc", *(m for m in shipped["methods"] if m in ("batchtopk_crosscoder", "logprob_diff"))]
    assert all(m["status"] == "ok" and m["calibration"].startswith("uncalibrated") for m in summary["methods"])
    assert "not applied" in summary["calibration"] and (work / "o" / "html" / "index.html").exists()


def test_the_terminal_shows_progress_and_the_run_log_keeps_everything(adapter, corpus, tmp_path):
    """conf/hydra/job_logging/diffbench.yaml: method diagnostics (a crosscoder's INFO metrics) and third-party warnings
    go to the run folder's cli.log only; diffbench's progress lines go to the terminal and into cli.log."""
    out = tmp_path / "o"
    r = subprocess.run([*EXE, "diff", "model_a=tiny-llama", f"model_b={adapter}", f"corpus={corpus}", "method=[l1_crosscoder]",
                        "+method.l1_crosscoder.params.steps=20", f"out={out}", "progress=false", "evidence=0", "collect.layers=[2]",
                        "calibration=null"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[diffbench] diff done" in r.stdout and "[INFO]" not in r.stdout and "Warning" not in r.stderr
    log = (out / "cli.log").read_text()
    assert "diff done" in log and "l1_crosscoder on A_vs_B" in log  # the progress line and the method's diagnostics
