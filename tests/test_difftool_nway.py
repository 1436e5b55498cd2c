"""`diffbench diff models=[...]` on tiny models: a group of three (tiny-llama and two random LoRA adapters on it) over a
user corpus, end to end (summary, GroupFindings on disk, findings.md, the HTML matrix of findings x members, opened in
Chromium), a failing N-way method recorded while the others run, and one clear error per bad group."""

import json
import shutil
from html.parser import HTMLParser

import pytest
import torch

from diffbench.core.nway import GroupContext, NWayMethod, register_nway_method

pytestmark = pytest.mark.usefixtures("one_thread")

N_MEMBERS = 3
SMALL = [f"++nway_method.{key}.params.{option}" for key, option in (  # small enough for tiny models (as tests/test_nway.py's)
    ("nway_crosscoder", "dict_size=128"), ("nway_crosscoder", "k=8"), ("nway_crosscoder", "steps=40"),
    ("nway_crosscoder", "batch_size=64"), ("nway_crosscoder", "max_tokens=2000"), ("nway_crosscoder", "eval_frac=0.25"),
    ("nway_crosscoder", "excl_frac=0.08"), ("nway_crosscoder", "subset_frac=0.04"), ("all_pairs", "pair_params.n_pca=2"),
    ("mean_vs_rest", "n_pca=2"))]
OK_METHODS = ("nway_crosscoder", "all_pairs", "per_member", "mean_vs_rest")  # conf/diff.yaml's default list


@register_nway_method
class Crashes(NWayMethod):
    """An N-way method that raises: recorded as failed, the run goes on."""

    name = "test_nway_crashes"

    def find(self, ctx: GroupContext):
        raise RuntimeError("this method always fails")


def lora_adapter(out, seed: int, targets: list[str]):
    """A PEFT adapter folder on tiny-llama with random (non-zero) LoRA weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from diffbench.harness.models import checkpoint_dir

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir("tiny-llama")[0], local_files_only=True)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return [lora_adapter(root / "first_adapter", 0, ["q_proj", "v_proj"]), lora_adapter(root / "second_adapter", 1, ["down_proj"])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from diffbench.tasks.everyday import everyday_prompts

    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": f"Here is a short answer about {p.lower()[:40]}"}) + "\n"
                            for p in everyday_prompts(30, seed=4)))
    return path


def nway_cfg(out, *overrides, small=True):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        return compose("diff", overrides=[f"out={out}", "progress=false", "collect.layers=[2]", "top=20", *(SMALL if small else []),
                                          *overrides])


@pytest.fixture(scope="module")
def nway_diffed(adapters, corpus, tmp_path_factory):
    from diffbench.harness.difftool import tool as difftool

    out = tmp_path_factory.mktemp("nway")
    members = ["tiny-llama", *map(str, adapters)]
    cfg = nway_cfg(out, f"models=[{','.join(members)}]", f"corpus={corpus}",  # the default methods, and one that fails
                   "+nway_method.test_nway_crashes.name=test_nway_crashes")  # (registered here, without a conf file)
    index = difftool.run(cfg, out)
    return out, index


class Matrix(HTMLParser):
    """The N-way report's matrix: its member columns and, per finding row, the member columns marked."""

    def __init__(self):
        super().__init__()
        self.member_columns, self.marked, self._row, self._col, self._in_matrix = 0, {}, None, 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "table" and "matrix" in cls:
            self._in_matrix = True
        if not self._in_matrix:
            return
        if tag == "th" and "member" in cls:
            self.member_columns += 1
        elif tag == "tr":
            self._row, self._col = a.get("data-finding"), 0
            if self._row is not None:
                self.marked[self._row] = set()
        elif tag == "td" and self._row is not None and "member" in cls:
            if "in" in cls:
                self.marked[self._row].add(self._col)
            self._col += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_matrix = False


def test_nway_diff_writes_summary_findings_and_the_matrix(nway_diffed, adapters):
    from diffbench.core import load_findings
    from diffbench.core.nway import GroupFinding

    out, index = nway_diffed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == ["tiny-llama", "first_adapter", "second_adapter"] and summary["base"] == "tiny-llama"
    assert [m["adapter"] for m in summary["members"]] == [False, True, True] and summary["status"] == "partial"
    status = {m["key"]: m for m in summary["methods"]}
    assert {k: m["status"] for k, m in status.items()} == {**dict.fromkeys(OK_METHODS, "ok"), "test_nway_crashes": "failed"}
    assert "this method always fails" in status["test_nway_crashes"]["error"] and (out / "errors" / "test_nway_crashes.txt").exists()
    assert all(m["seconds"] > 0 for m in summary["methods"])
    matrix = Matrix()
    matrix.feed(index.read_text())
    assert matrix.member_columns == N_MEMBERS
    shown = 0
    for key in OK_METHODS:  # per_member needs the common base: it applies because the group has one
        findings, meta = load_findings(out / "findings" / key)  # GroupFindings, with their subsets, round-trip
        assert findings and len(findings) == status[key]["n_findings"] <= 20
        assert meta["models"] == summary["models"] and meta["sources"][1:] == [str(a) for a in adapters]
        records = json.loads((out / "findings" / f"{key}.json").read_text())["findings"]
        for f, rec in zip(findings, records):
            assert isinstance(f, GroupFinding) and list(f.models) == rec["models"] and list(f.reads) == rec["reads"]
            assert f.models and set(f.models) <= set(range(N_MEMBERS))
            assert f.info.get("snippets") or key == "per_member"  # weight_svd reads modules the store does not hold
            assert matrix.marked[f.id] == set(f.models), f.id  # a mark exactly in the finding's subset
            shown += 1
    assert len(matrix.marked) == shown  # one row per finding, none else
    sizes = {len(f.models) for key in OK_METHODS for f in load_findings(out / "findings" / key)[0]}
    assert 1 in sizes  # some finding of one member alone
    md = (out / "findings.md").read_text()
    assert "| 2 | second_adapter |" in md and "## nway_crosscoder" in md and "## all_pairs" in md and "| failed |" in md
    page = (out / "html" / "nway_crosscoder--nway.html").read_text()
    assert "subset: {" in page and "calibrated flag: uncalibrated" in page and "<script" not in page
    for text in (index.read_text(), page):
        assert str(out) not in text and "http://" not in text and "https://" not in text


def test_nway_report_renders_in_chromium(nway_diffed, tmp_path):
    from browser_check import layout_check, open_clean

    out, index = nway_diffed
    overview, page = open_clean([index, out / "html" / "all_pairs--nway.html"],
                                ["table.matrix tr.finding", "table.matrix th.member", "table.matrix td.member.in",
                                 "table.methods tr", "div.finding", "div.snippet"], tmp_path)
    assert overview.counts["table.matrix th.member"] == N_MEMBERS and overview.counts["table.matrix tr.finding"] > 0
    assert overview.counts["table.matrix td.member.in"] >= overview.counts["table.matrix tr.finding"]  # each row marks someone
    assert overview.counts["table.methods tr"] == len(OK_METHODS) + 2 and "subset" in overview.text.lower()
    assert page.counts["div.finding"] > 0 and page.counts["div.snippet"] > 0
    lay = layout_check(index)
    assert lay["summary"] is not None and lay["summary"]["y"] < 450  # the matrix opens the page


def test_members_share_a_base_or_not(adapters, tmp_path):
    """The common base is found from the checkpoints (no weights loaded): adapters of one base with or without the base
    itself; a copy of the base in another folder is another model as far as the tool knows."""
    from diffbench.harness.difftool.nway import common_base, members_of
    from diffbench.harness.models import checkpoint_dir

    assert common_base(members_of(["tiny-llama", str(adapters[0])])) == "tiny-llama"
    assert common_base(members_of([str(a) for a in adapters])) is not None
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint_dir("tiny-llama")[0], copy)
    assert common_base(members_of(["tiny-llama", str(copy)])) is None


def test_bad_groups_are_one_clear_error_before_any_model_loads(adapters, tmp_path, monkeypatch):
    from diffbench.harness.difftool import nway, tool as difftool
    from diffbench.harness.models import checkpoint_dir

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(nway, "load_model", no_loading)
    run = lambda *o: difftool.run(nway_cfg(tmp_path / "o", *o), tmp_path / "o")
    with pytest.raises(ValueError, match=r"member 2 \(tiny-llama-wide\) has another architecture than member 0 \(tiny-llama\): "
                                         r"hidden_size 96 vs 64"):
        run(f"models=[tiny-llama,{adapters[0]},tiny-llama-wide]")
    with pytest.raises(ValueError, match=r"member 1 \(tiny-othertok\) has another architecture"):
        run("models=[tiny-llama,tiny-othertok]")
    # one architecture, another chat template: the tokenizer check names the member
    other = tmp_path / "other_template"
    shutil.copytree(checkpoint_dir("tiny-llama")[0], other)
    (other / "chat_template.jinja").write_text("{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}")
    with pytest.raises(ValueError, match=rf"member 1 \({other}\) has another tokenizer or chat template than member 0"):
        run(f"models=[tiny-llama,{other}]")
    with pytest.raises(ValueError, match="either models=.* or model_a= and model_b="):
        run("models=[tiny-llama,tiny-llama]", "model_a=tiny-llama")
    with pytest.raises(ValueError, match=r"needs 2 to 8 models, got 1"):
        run("models=[tiny-llama]")
    with pytest.raises(ValueError, match=r"needs 2 to 8 models, got 9"):
        run(f"models=[{','.join(['tiny-llama'] * 9)}]")
    with pytest.raises(Exception, match=r"member 1 \(.*nowhere\)"):
        run(f"models=[tiny-llama,{tmp_path / 'nowhere'}]")
    with pytest.raises(ValueError, match=r"N-way method 'nway_crosscoder' \(conf/nway_method/nway_crosscoder.yaml or an override\)"):
        run("models=[tiny-llama,tiny-llama]", "++nway_method.nway_crosscoder.params.stepz=3")
    with pytest.raises(ValueError, match="no N-way methods to run"):
        difftool.run(nway_cfg(tmp_path / "o", "models=[tiny-llama,tiny-llama]", "nway_method=[]", small=False), tmp_path / "o")


def test_cli_refuses_models_with_model_a(capsys):
    from diffbench.harness import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["diff", "models=[tiny-llama,tiny-llama]", "model_b=tiny-llama"])
    assert e.value.code == 2 and "either models=[A,B,...] (N-way) or model_a= and model_b=" in capsys.readouterr().err


def test_cli_runs_a_group_of_adapters_with_progress_lines(adapters, corpus, tmp_path):
    """From the command line, in its default folder (runs/diff-nway-<first member>-<time>/): two adapters of one base
    without the base itself (so the base is loaded beside them for per_member), with a progress line per step."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from diffbench.harness.cli import main; main()", "diff",
                        f"models=[{adapters[0]},{adapters[1]}]", f"corpus={corpus}", "nway_method=[all_pairs,per_member]",
                        "collect.layers=[2]", "progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (folder,) = (tmp_path / "runs").glob("diff-nway-*first_adapter-*")  # path_name: the path as one name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["base"].startswith("tiny-llama") and [m["status"] for m in summary["methods"]] == ["ok", "ok"]
    for line in ("N-way diff of 2 models: first_adapter, second_adapter", "common base: tiny-llama", "loading member 1",
                 "activations of member 1", "per_member", "N-way diff done"):
        assert line in r.stdout, (line, r.stdout)
    assert (folder / "html" / "index.html").exists() and (folder / "cli.log").exists()
