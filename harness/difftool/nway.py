"""`diffbench diff models=[A,B,C,...]`: N-way methods on 2..8 models of one architecture and tokenizer.

    check inputs (members, one architecture and tokenizer, N-way methods built) ─► load the members (and their
      common base, where they have one) ─► corpus (the audit corpus answered by the first member, or yours)
      ─► every member's activations on the same texts (row-aligned: core/nway.py's GroupActivations)
      ─► each N-way method's findings, attributed to subsets of the members (a failing method is recorded)
      ─► out/: findings/, summary.json, findings.md, html/index.html (a matrix of findings x members)

Models, corpus, collection and the methods' guard are the two-model tool's (tool.py, harness/pair_run.py); what
differs is that a finding belongs to a subset of the members (`GroupFinding.models`), not to a side. There is no
N-way reference run yet, so no finding has a calibrated flag and no steered continuations are made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ...core import save_findings
from ...core.activations import TextSet
from ...core.env import default_device, say
from ...core.io import atomic_write, write_json
from ...core.model import LoadedModel
from ...core.nway import GroupActivations, GroupContext
from ..models import ModelNotAvailableError, checkpoint_dir, load_model
from .tool import (ARCH_KEYS, MethodRun, _md, architecture, collect_settings, default_corpus, display_name,
                   model_source, record_outcome, same_model)
from .usercorpus import read_corpus

MIN_MEMBERS, MAX_MEMBERS = 2, 8
GROUP_ID = "group"  # finding ids carry it: kept short, the report names the members
UNCALIBRATED = "uncalibrated: no N-way reference run has null-pair thresholds yet"
TOP_MD = 10  # findings per method in findings.md (the HTML matrix shows harness/report/html.py's TOP)


@dataclass(frozen=True)
class Member:
    index: int
    spec: str  # as given in models=[...]
    base: str  # its base model: a registered name or a checkpoint folder
    adapter: Path | None
    name: str  # as the report names it


# ----------------------------------------------------------------------------- inputs


def members_of(specs: list[str]) -> list[Member]:
    """Each models=[...] entry resolved as model_a/model_b are (tool.model_source); errors name the member."""
    if not MIN_MEMBERS <= len(specs) <= MAX_MEMBERS:
        raise ValueError(f"models=[...] needs {MIN_MEMBERS} to {MAX_MEMBERS} models, got {len(specs)}: {specs}")
    out = []
    for i, spec in enumerate(specs):
        try:
            base, adapter = model_source(spec)
        except ModelNotAvailableError as e:
            raise ModelNotAvailableError(f"member {i} ({spec}): {e}") from e
        out.append(Member(i, spec, base, adapter, display_name(spec)))
    for a, b in combinations(out, 2):
        if same_model((a.base, a.adapter), (b.base, b.adapter)):
            say(f"warning: members {a.index} and {b.index} are the same model ({a.spec}): every difference between them is "
                "zero by construction")
    return out


def _tokenizer_fingerprint(base: str) -> str:
    """The fingerprint (harness/data/align.py) of the tokenizer load_model gives a base model: no weights loaded."""
    from transformers import AutoTokenizer

    from ..data.align import tokenizer_fingerprint

    return tokenizer_fingerprint(AutoTokenizer.from_pretrained(checkpoint_dir(base)[0], local_files_only=True))


def check_one_architecture(members: list[Member]) -> None:
    """Every member's architecture (config.json) and tokenizer against member 0's, before any weights load: N-way
    methods read every member's activations row by row in one space."""
    first = members[0]
    ref = architecture(first.spec)
    for m in members[1:]:
        arch = architecture(m.spec)
        differ = [f"{k} {arch[k]} vs {ref[k]}" for k in ARCH_KEYS if arch[k] != ref[k]]
        if differ:
            raise ValueError(f"member {m.index} ({m.spec}) has another architecture than member 0 ({first.spec}): "
                             f"{', '.join(differ)}; N-way diffing needs one architecture and tokenizer (two models of "
                             "different architectures: model_a= and model_b=)")
    prints = {first.base: _tokenizer_fingerprint(first.base)}
    for m in members[1:]:
        if m.base not in prints:
            prints[m.base] = _tokenizer_fingerprint(m.base)
        if prints[m.base] != prints[first.base]:
            raise ValueError(f"member {m.index} ({m.spec}) has another tokenizer or chat template than member 0 "
                             f"({first.spec}); N-way diffing needs one architecture and tokenizer (two models with "
                             "different tokenizers: model_a= and model_b=)")


def common_base(members: list[Member]) -> str | None:
    """The base model every member was made from (adapters of one base, or the base itself): one checkpoint folder
    (a registered name is its materialised folder), or None."""
    folders = {str(checkpoint_dir(m.base)[0].resolve()) for m in members}
    return members[0].base if len(folders) == 1 else None


def nway_method_configs(cfg: DictConfig) -> dict[str, dict]:
    """{key: {"name", "params"}}: `nway_method=[...]` (conf/nway_method/*.yaml; parameters:
    ++nway_method.<key>.params.<option>=<value>)."""
    configs = OmegaConf.to_container(cfg.nway_method, resolve=True) if cfg.get("nway_method") else {}
    if not configs:
        raise ValueError("no N-way methods to run: give nway_method=[...] (conf/nway_method/*.yaml)")
    return configs


# ----------------------------------------------------------------------------- the pipeline


def run_group(cfg: DictConfig, out: Path) -> Path:
    """The N-way diff (module docstring); called by tool.run once the options are checked."""
    from ..data.store import collect
    from ..pair_run import check_methods

    t0 = time.time()
    # -- every input checked before the first model loads
    members = members_of([str(m) for m in cfg.models])
    check_one_architecture(members)
    base = common_base(members)
    docs = read_corpus(cfg.corpus, max_tokens=int(cfg.collect.max_length)) if cfg.get("corpus") else None
    configs = nway_method_configs(cfg)
    methods = check_methods(configs, nway=True)
    device = default_device() if cfg.device == "auto" else cfg.device
    say(f"N-way diff of {len(members)} models: {', '.join(m.name for m in members)}; methods: {', '.join(configs)}")
    say(f"common base: {display_name(base)} (per-member methods apply)" if base else
        "no common base model: methods that diff each member against the base do not apply")
    models: list[LoadedModel] = []
    for m in members:
        say(f"loading member {m.index}: {m.name}")
        models.append(load_model(m.base, adapter=m.adapter, dtype=cfg.dtype, device=device, display_name=m.name))
    base_member = next((m.index for m in members if m.adapter is None), None) if base else None
    base_model = None
    if base:  # a member that is the base serves as it; else the base is loaded beside the members
        base_model = models[base_member] if base_member is not None else load_model(
            base, dtype=cfg.dtype, device=device, display_name=display_name(base))
    if docs is None:
        say(f"corpus: the audit corpus, answered by member 0 ({members[0].name})")
        docs = default_corpus(models[0], cfg)
    else:
        say(f"corpus: {cfg.corpus} ({len(docs)} documents)")
    c, kw = collect_settings(cfg)
    layers = sorted({models[0].layer_index(l) for l in c.layers})
    texts = TextSet.of(f"diff-corpus{len(docs)}", [d.render(models[0].tokenizer)[0] for d in docs])
    stores = []
    for i, model in enumerate(models):
        say(f"activations of member {i} ({model.name}): {len(texts)} texts, layers {layers}")
        stores.append(collect(model, texts, layers, **kw))
    base_store = None
    if base_model is not None:
        base_store = stores[base_member] if base_member is not None else collect(base_model, texts, layers, **kw)
    group = GroupActivations(tuple(stores), len(texts))
    ctx = GroupContext(GROUP_ID, tuple(models), group, layers, seed=int(cfg.seed), device=device, work_dir=out / "work",
                       progress=bool(cfg.progress), base=base_model, base_store=base_store)
    runs = [_run_group_method(key, configs[key]["name"], method, ctx, texts, cfg, out, members)
            for key, method in methods.items()]
    if not any(r.status == "ok" for r in runs):
        raise ValueError(f"no selected N-way method applies to {', '.join(m.name for m in members)} "
                         f"({'; '.join(f'{r.key}: {r.error}' for r in runs)})")
    summary = {"models": [m.name for m in members],
               "members": [{"index": m.index, "name": m.name, "source": m.spec, "adapter": m.adapter is not None} for m in members],
               "base": display_name(base) if base else None,
               "corpus": str(cfg.corpus) if cfg.get("corpus") else f"audit corpus (answers by member 0, {members[0].name})",
               "documents": len(docs), "tokens": stores[0].manifest.get("n_tokens"), "layers": layers,
               "calibration": None, "status": "ok" if all(r.status == "ok" for r in runs) else "partial",
               "seconds": time.time() - t0, "methods": [{k: v for k, v in r.__dict__.items() if k != "findings"} for r in runs]}
    write_json(out / "summary.json", summary)
    write_group_markdown(out, summary, runs)
    from ..report.html import write_nway_html

    index = write_nway_html(out, summary, runs)
    say(f"N-way diff done in {time.time() - t0:.0f}s: {index}")
    return index


def _run_group_method(key: str, name: str, method, ctx: GroupContext, texts: TextSet, cfg: DictConfig, out: Path,
                      members: list[Member]) -> MethodRun:
    from ..pair_run import run_group_method

    r = MethodRun(key, name, calibration=UNCALIBRATED)
    say(f"{key}: running on {ctx.n} members")
    outcome = run_group_method(method, ctx, texts, int(cfg.collect.max_length), top=int(cfg.top))
    findings = record_outcome(r, outcome, out)
    if outcome.status == "ok":
        for f in findings:
            f.info["calibrated_flag"], f.info["calibration"] = "n/a", UNCALIBRATED
        save_findings(out / "findings" / key, findings, {  # GroupFindings: with their models and reads
            "method": key, "name": name, "models": [m.name for m in members], "sources": [m.spec for m in members],
            "config_hash": outcome.config_hash})
        r.findings, r.n_findings = findings, len(findings)
        r.n_flagged = sum(bool(f.flagged) for f in findings)
        sizes = sorted({len(f.models) for f in findings})
        say(f"{key:22s} ok: {r.n_findings} findings ({r.n_flagged} flagged by the method; subsets of "
            f"{', '.join(map(str, sizes)) or 'no'} members) ({r.seconds:.1f}s)")
    return r


def subset_label(models: tuple[int, ...] | list[int], names: list[str]) -> str:
    """'{0, 2}: base, false_fact': a finding's subset as the reports name it."""
    return "{" + ", ".join(map(str, models)) + "}: " + ", ".join(names[m] for m in models)


def write_group_markdown(out: Path, summary: dict, runs: list[MethodRun]) -> None:
    """findings.md: the members, each method's status, and per method its top findings as rows of a findings x members
    matrix (x: the finding is attributed to that member)."""
    names = summary["models"]
    lines = [f"# diffbench diff: {len(names)} models", "", "| member | model | source |", "|---|---|---|"]
    lines += [f"| {m['index']} | {_md(m['name'])} | `{_md(m['source'])}` |" for m in summary["members"]]
    lines += ["", f"- common base: {summary['base'] or 'none (per-member methods do not apply)'}",
              f"- corpus: {summary['corpus']} ({summary['documents']} documents)", f"- calibration: {UNCALIBRATED}", "",
              "A finding's subset is the set of members the method attributes the difference to (x below): what those "
              "members have and the others lack, as the method reads it.", "",
              "## Methods", "", "| method | status | findings | flagged (method) | seconds | note |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.key} | {r.status} | {r.n_findings} | {r.n_flagged} | {r.seconds:.1f} | {_md(r.error[:160])} |")
    for r in runs:
        if r.status != "ok":
            continue
        lines += ["", f"## {r.key}", "", "| # | finding | " + " | ".join(f"{i}" for i in range(len(names))) +
                  " | uniqueness | method's own flag | tokens |", "|---" * (len(names) + 5) + "|"]
        for n, f in enumerate(r.findings[:TOP_MD], 1):
            marks = " | ".join("x" if i in f.models else "" for i in range(len(names)))
            lines.append(f"| {n} | `{_md(f.id)}` | {marks} | {float(f.uniqueness):.4g} | {'yes' if f.flagged else 'no'} | "
                         f"{_md(' '.join(repr(t) for t in f.tokens[:5]))} |")
    atomic_write(out / "findings.md", "\n".join(lines) + "\n")
