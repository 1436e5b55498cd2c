"""`diffbench diff`: diffing methods on two models of your own, with no planting and no ground truth.

    diffbench diff model_a=smollm2-135m model_b=PATH [corpus=FILE] [method=[kl_diff,l1_crosscoder]]

    check inputs ─► load A and B ─► corpus (the audit corpus with A's answers, or yours) ─► activations of both
      ─► each method's findings (a failing method is recorded) ─► calibrated flags (the reference run's
      null-pair thresholds, harness/score/flags.py) ─► evidence (snippets, steered continuations, harness/difftool/evidence.py)
      ─► out/: findings/, summary.json, findings.md, html/index.html

A model is a registered name, a local Hugging Face checkpoint folder, or a PEFT adapter folder (its base model
is the adapter's `base_model_name_or_path`, a name or a checkpoint folder). Everything is checked before the
first model loads. Options: conf/diff.yaml. `models=[A,B,C,...]` instead of model_a/model_b is the N-way form
(harness/difftool/nway.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ...core import PairContext, save_findings
from ...core.activations import TextSet
from ...core.env import default_device, say
from ...core.io import atomic_write, read_json, write_json
from ...core.model import LoadedModel
from ...core.plugins import load_plugins
from ..score.flags import FILE as FLAGS_FILE, Calibration
from ..models import ModelNotAvailableError, checkpoint_dir, load_model
from ..pair_run import check_methods, paired_activations, run_method
from .usercorpus import Document, read_corpus


@dataclass
class MethodRun:
    key: str
    name: str
    status: str = "ok"  # ok | not_applicable | failed
    error: str = ""
    seconds: float = 0.0
    n_findings: int = 0
    n_flagged: int = 0  # the method's own rule
    n_calibrated: int = 0  # clear the reference run's null threshold
    calibration: str = ""  # why no threshold applies, when none does
    findings: list = field(default_factory=list, repr=False)


# ----------------------------------------------------------------------------- inputs


def model_source(spec: str) -> tuple[str, Path | None]:
    """(base model name or checkpoint path, adapter folder or None) for a model_a/model_b value; checks it exists."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").exists():
        base = read_json(path / "adapter_config.json").get("base_model_name_or_path")
        if not (path / "adapter_model.safetensors").exists():
            raise ModelNotAvailableError(f"adapter {spec!r} has no adapter_model.safetensors"
                                         + (" (only a pickle adapter_model.bin: diffbench loads safetensors only, never pickle, "
                                            "which can run code; save it again with safe_serialization=True)"
                                            if (path / "adapter_model.bin").exists() else ""))
        if not base:
            from ..plant.zoo import base_of

            base = base_of(path)  # a shipped zoo organism: its manifest names the base
        if not base:
            raise ModelNotAvailableError(f"adapter {spec!r}: adapter_config.json names no base_model_name_or_path "
                                         "(set it to the base model's name or checkpoint folder)")
        try:
            checkpoint_dir(base)
        except ModelNotAvailableError as e:
            raise ModelNotAvailableError(f"adapter {spec!r}: its base model {base!r} cannot be loaded: {e}") from e
        return base, path
    checkpoint_dir(spec)  # a registered name or a checkpoint folder, or one clear error
    return spec, None


def same_model(src_a: tuple[str, Path | None], src_b: tuple[str, Path | None]) -> bool:
    """Whether two model_source results are one model: the same checkpoint folder (a registered name is its
    materialised folder) with the same adapter folder, or none, after resolving paths."""
    def key(src):
        return str(checkpoint_dir(src[0])[0].resolve()), str(src[1].resolve()) if src[1] is not None else None

    return key(src_a) == key(src_b)


def display_name(spec: str) -> str:
    """A model as the report names it: a registered name as is, a folder by its own name (not its whole path)."""
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else spec


PACKAGED = "packaged"  # reference=/calibration= value: the quick reference's figures shipped in harness/difftool/reference/
PACKAGED_DIR = Path(__file__).resolve().parent / "reference"  # package data, written by scripts/package_reference.py


def default_methods(reference: Path) -> list[str]:
    """The methods whose lead metric (recall@5, any channel) beats every floor's upper bound in the reference run."""
    scores = read_json(reference)
    metrics, floors = scores["metrics"], set(scores.get("floors") or [])
    lead = "recall@5"
    bar = max((metrics[f][lead]["hi"] for f in floors if f in metrics), default=0.0)
    return [m for m in metrics if m not in floors and (metrics[m][lead]["value"] or 0.0) > bar]


def reference_methods(reference: str) -> list[str]:
    """`packaged`: the shipped list (from the quick reference run); else a run's scores.json."""
    if reference == PACKAGED:
        return list(read_json(PACKAGED_DIR / "default_methods.json")["methods"])
    path = Path(reference).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference={reference}: no such scores.json (a run's, or `packaged` for the shipped one)")
    return default_methods(path)


@dataclass(frozen=True)
class PairKind:
    """Whether two models share an architecture, read from their checkpoints' config.json (no weights loaded)."""

    cross: bool
    why: str = ""  # what differs, e.g. "hidden_size 64 vs 96"


ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
CROSS_DEFAULT = "dfc"  # the Dedicated Feature Crosscoder, built for cross-architecture diffing: first on such pairs


def architecture(spec: str) -> dict:
    """A model_a/model_b value's architecture from its checkpoint's config.json (an adapter's: its base model's)."""
    base, _ = model_source(spec)
    conf = read_json(checkpoint_dir(base)[0] / "config.json")
    text = conf.get("text_config") or {}  # a multimodal wrapper's language model
    return {k: text.get(k, conf.get(k)) for k in ARCH_KEYS}


def pair_kind(model_a: str, model_b: str) -> PairKind:
    a, b = architecture(model_a), architecture(model_b)
    differ = [f"{k} {a[k]} vs {b[k]}" for k in ARCH_KEYS if a[k] != b[k]]
    return PairKind(bool(differ), ", ".join(differ))


def _method_file(key: str) -> dict:
    f = resources.files("diffbench.conf") / "method" / f"{key}.yaml"
    return OmegaConf.to_container(OmegaConf.create(f.read_text()), resolve=True) if f.is_file() else {}


def default_method_configs(reference: list[str], kind: PairKind) -> dict[str, dict]:
    """The defaults per pair kind: same architecture, the reference's methods; across architectures, dfc and those of the
    reference's methods whose class applies to such pairs (`Method.cross_architecture`): the others need a shared
    activation space, weights or vocabulary and would only report "not applicable"."""
    methods: dict[str, dict] = {}
    for k in ([CROSS_DEFAULT] if kind.cross else []) + reference:
        methods.update(_method_file(k))
    if kind.cross:
        from ...core import METHODS
        from ...methods import load_all_methods

        load_all_methods()
        methods = {k: m for k, m in methods.items() if m["name"] in METHODS and METHODS.get(m["name"]).cross_architecture}
        say(f"cross-architecture pair ({kind.why}): default methods {', '.join(methods)} (those that apply to such pairs)")
    return methods


def method_configs(cfg: DictConfig, kind: PairKind | None = None) -> dict[str, dict]:
    """{key: {"name", "params"}}: `method=[...]` (conf/method/*.yaml), or the defaults for this pair's kind."""
    if cfg.get("method"):
        methods = OmegaConf.to_container(cfg.method, resolve=True)
    else:
        kind = kind or pair_kind(str(cfg.model_a), str(cfg.model_b))
        methods = default_method_configs(reference_methods(str(cfg.reference)), kind)
    check_methods(methods)
    if not methods:
        raise ValueError("no methods to run: give method=[...] (see `diffbench list`)")
    return methods


def default_corpus(model: LoadedModel, cfg: DictConfig) -> list[Document]:
    """The audit corpus (harness/data/corpus.py: everyday chat plus every shipped behavior's audit split at `prevalence`),
    answered by model A."""
    from ..data.answers import corpus_answers
    from ..data.corpus import CorpusConfig, plan_for

    ccfg = CorpusConfig.from_dict(OmegaConf.to_container(cfg.audit_corpus, resolve=True))
    prompts = list(plan_for(model.tokenizer, {}, ccfg).prompts)
    answers, _ = corpus_answers(model, prompts, ccfg.answer_tokens, bool(cfg.progress))
    return [Document(a, q) for q, a in zip(prompts, answers)]


# ----------------------------------------------------------------------------- the pipeline


def run(cfg: DictConfig, out: Path) -> Path:
    import os

    from ..schema import check_diff_config, resolved_config

    # options first (types, ranges, unknown keys: `top=abc` fails here, not inside a method after collecting)
    check_diff_config(resolved_config(cfg, "conf/diff.yaml or a command-line override"))
    if cfg.get("cache_dir"):
        os.environ["DIFFBENCH_CACHE"] = str(cfg.cache_dir)
    load_plugins(cfg.get("plugins") or [])
    if cfg.get("models") is not None:  # the N-way form
        if cfg.get("model_a") is not None or cfg.get("model_b") is not None:
            raise ValueError("diffbench diff takes either models=[A,B,...] (N-way) or model_a= and model_b= (two models), "
                             "not both")
        from .nway import run_group

        return run_group(cfg, out)
    if cfg.get("model_a") is None or cfg.get("model_b") is None:
        raise ValueError("diffbench diff needs model_a= and model_b= (two models), or models=[A,B,...] (N-way)")
    t0 = time.time()
    # -- every input checked before the first model loads
    src_a, src_b = model_source(str(cfg.model_a)), model_source(str(cfg.model_b))
    if same_model(src_a, src_b):
        say(f"warning: model_a and model_b are the same model ({cfg.model_a} and {cfg.model_b}): every difference is "
            "zero by construction, so the diff will find nothing; check the two names or paths")
    docs = read_corpus(cfg.corpus, max_tokens=int(cfg.collect.max_length)) if cfg.get("corpus") else None
    kind = pair_kind(str(cfg.model_a), str(cfg.model_b))  # once: the default methods and the calibration both depend on it
    methods = method_configs(cfg, kind)
    calib = _calibration(cfg, kind)
    device = default_device() if cfg.device == "auto" else cfg.device
    ma = load_model(src_a[0], adapter=src_a[1], dtype=cfg.dtype, device=device, display_name=display_name(str(cfg.model_a)))
    mb = load_model(src_b[0], adapter=src_b[1], dtype=cfg.dtype, device=device, display_name=display_name(str(cfg.model_b)))
    say(f"diff {ma.name} ({ma.model.config.model_type}) vs {mb.name} ({mb.model.config.model_type}); methods: {', '.join(methods)}")
    if docs is None:
        docs = default_corpus(ma, cfg)
    paired, texts_a, la, lb = _activations(cfg, ma, mb, docs)
    runs = [_run_method(key, m, ma, mb, paired, texts_a, la, lb, cfg, out, calib, device) for key, m in methods.items()]
    if not any(r.status == "ok" for r in runs):
        reasons = "; ".join(f"{r.key}: {r.error}" for r in runs)
        raise ValueError(f"no selected method applies to {ma.name} vs {mb.name} ({reasons})")
    from .evidence import steering_evidence

    evidence = steering_evidence(runs, ma, mb, docs, paired, int(cfg.evidence), int(cfg.steer_prompts), int(cfg.steer_tokens), bool(cfg.progress))
    summary = {"model_a": ma.name, "model_b": mb.name, "sources": [str(cfg.model_a), str(cfg.model_b)], "corpus": str(cfg.corpus) if cfg.get("corpus") else "audit corpus (answers by model A)",
               "documents": len(docs), "tokens_a": paired.a.manifest.get("n_tokens"), "layers": [la, lb],
               "calibration": calibration_text(calib),
               "cross_pair": paired.alignment is not None or ma.hidden_size != mb.hidden_size, "seconds": time.time() - t0,
               "methods": [{k: v for k, v in r.__dict__.items() if k != "findings"} for r in runs]}
    write_json(out / "summary.json", summary)
    write_markdown(out, summary, runs, evidence)
    from ..report.html import write_diff_html

    index = write_diff_html(out, summary, runs, evidence)
    say(f"diff done in {time.time() - t0:.0f}s: {index}")
    return index


@dataclass
class SameArchitectureOnly(Calibration):
    """A calibration that is not applied: its thresholds come from null pairs of one model and its fine-tunes (every
    null pair is), so they say nothing about the uniqueness of findings on a cross-architecture pair."""

    why: str = ""

    def flag(self, method_key: str, config_hash: str, uniqueness: float) -> tuple[bool | None, str]:
        return None, CROSS_UNCALIBRATED

    def describe(self) -> str:
        return f"not applied ({CROSS_UNCALIBRATED}; this pair differs: {self.why})"


CROSS_UNCALIBRATED = "uncalibrated: the packaged thresholds come from same-architecture null pairs"


def calibration_text(calib: Calibration | None) -> str | None:
    """The calibration as summary.json and the reports name it (a file name, never a machine path)."""
    if calib is None:
        return None
    text = f"{calib.path.name} of the {calib.suite} suite on {calib.model}"
    return f"{text}, {calib.describe()}" if isinstance(calib, SameArchitectureOnly) else text


def _calibration(cfg: DictConfig, kind: PairKind | None = None) -> Calibration | None:
    if not cfg.get("calibration"):
        return None
    path = PACKAGED_DIR / FLAGS_FILE if cfg.calibration == PACKAGED else Path(str(cfg.calibration)).expanduser()
    if not path.exists():
        say(f"no calibration file at {path}: findings are shown without calibrated flags")
        return None
    kind = kind or pair_kind(str(cfg.model_a), str(cfg.model_b))
    c = Calibration.load(path)
    return SameArchitectureOnly(c.path, c.model, c.suite, c.thresholds, kind.why) if kind.cross else c


def collect_settings(cfg: DictConfig):
    """The `collect` block: its CollectConfig and the keyword arguments of `collect` (harness/data/store.py)."""
    from ..data.config import CollectConfig

    c = CollectConfig.from_dict(OmegaConf.to_container(cfg.collect, resolve=True))
    return c, dict(batch_size=c.batch_size, max_length=c.max_length, shard_tokens=c.shard_tokens, progress=bool(cfg.progress))


def _activations(cfg: DictConfig, ma: LoadedModel, mb: LoadedModel, docs: list[Document]):
    """Both models' residual streams on the corpus, paired position by position (aligned across tokenizers)."""
    from ..data.store import collect

    c, kw = collect_settings(cfg)
    la = sorted({ma.layer_index(l) for l in c.layers})
    lb = sorted({mb.layer_index(l) for l in c.layers})
    ra = [d.render(ma.tokenizer) for d in docs]
    ta = TextSet.of(f"diff-corpus{len(docs)}", [t for t, _ in ra])

    def cross():
        rb = [d.render(mb.tokenizer) for d in docs]
        tb = TextSet.of(f"diff-corpus{len(docs)}x", [t for t, _ in rb])
        return (ta, [s for _, s in ra]), (tb, [s for _, s in rb])

    paired = paired_activations(ma, mb, lambda m, texts: collect(m, texts, la if m is ma else lb, **kw), lambda: ta, cross,
                                c.align_max_window)
    return paired, ta, la, lb


def _run_method(key: str, mcfg: dict, ma, mb, paired, texts_a: TextSet, la, lb, cfg, out: Path, calib, device) -> MethodRun:
    r = MethodRun(key, mcfg["name"])
    # finding ids of some methods carry the pair id: keep it short (the report names the models)
    ctx = PairContext("A_vs_B", ma, mb, paired, la, seed=int(cfg.seed), device=device, work_dir=out / "work",
                      layers_b=lb if lb != la else None, progress=bool(cfg.progress))
    outcome = run_method(mcfg, ctx, texts_a, int(cfg.collect.max_length), top=int(cfg.top))
    findings = record_outcome(r, outcome, out)
    if outcome.status == "ok":
        for f in findings:
            flag, note = calib.flag(key, outcome.config_hash, float(f.uniqueness)) if calib else (None, "no calibration file")
            f.info["calibrated_flag"] = "n/a" if flag is None else ("yes" if flag else "no")
            f.info["calibration"] = note
            r.calibration = "" if flag is not None else note
        save_findings(out / "findings" / key, findings, {"method": key, "model_a": ma.name, "model_b": mb.name, "config_hash": outcome.config_hash})
        r.findings, r.n_findings = findings, len(findings)
        r.n_flagged = sum(bool(f.flagged) for f in findings)
        r.n_calibrated = sum(f.info["calibrated_flag"] == "yes" for f in findings)
        calibrated = "uncalibrated" if r.calibration else f"{r.n_calibrated} clear the null threshold"
        say(f"{key:22s} ok: {r.n_findings} findings, {r.n_flagged} flagged by the method, {calibrated} ({r.seconds:.1f}s)")
    return r


def record_outcome(r: MethodRun, outcome, out: Path) -> list:
    """A method's outcome (harness/pair_run.py's MethodOutcome) into its record; a method that did not run to the end
    gets its traceback in out/errors/<key>.txt and one line on the terminal. Returns the findings."""
    r.status, r.error, r.seconds = outcome.status, outcome.error, outcome.seconds
    if outcome.status != "ok":
        if outcome.traceback:
            (out / "errors").mkdir(parents=True, exist_ok=True)
            atomic_write(out / "errors" / f"{r.key}.txt", outcome.traceback)
        say(f"{r.key:22s} {r.status.replace('_', ' ')} ({r.seconds:.1f}s): {r.error[:300]}")
    return outcome.findings


TOP_FINDINGS, TOP_PER_METHOD = 8, 2
TOP_RULE = (f"the {TOP_FINDINGS} findings of highest uniqueness over all methods, at most {TOP_PER_METHOD} per method "
            "(uniqueness scales differ between methods: compare within a method, read the evidence)")


def top_findings(runs: list[MethodRun], evidence: dict[str, dict[str, dict]] | None = None) -> list[dict]:
    """The best few findings across methods, for the summary that opens findings.md and the HTML report: each with its
    method, rank in it, side, tokens (or text), calibrated flag and the steering's effect where it was measured."""
    picked = [(r, i, f) for r in runs if r.status == "ok" for i, f in enumerate(r.findings[:TOP_PER_METHOD])]
    picked.sort(key=lambda x: -float(x[2].uniqueness))
    out = []
    for r, i, f in picked[:TOP_FINDINGS]:
        steer = (evidence or {}).get(r.key, {}).get(f.id)
        out.append({"method": r.key, "rank": i + 1, "id": f.id, "side": f.side, "tokens": list(f.tokens[:6]),
                    "text": f.info.get("excerpt") if isinstance(f.info.get("excerpt"), str) else None,
                    "uniqueness": float(f.uniqueness), "flagged": bool(f.flagged), "calibrated": f.info.get("calibrated_flag", "n/a"),
                    "effect": steer["effect"] if steer else None})
    return out


def _md(text: str) -> str:
    """Text for a Markdown table cell: no line breaks, no column bars."""
    return " ".join(str(text).split()).replace("|", "\\|")


def write_markdown(out: Path, summary: dict, runs: list[MethodRun], evidence: dict | None = None, top: int = 5) -> None:
    """findings.md: the top findings across methods first, then per method its status and top findings (the HTML report
    has the evidence)."""
    side = {"a": f"A ({summary['model_a']})", "b": f"B ({summary['model_b']})", "both": "both"}
    lines = [f"# diffbench diff: `{summary['model_a']}` vs `{summary['model_b']}`", "",
             f"- corpus: {summary['corpus']} ({summary['documents']} documents)", f"- calibration: {summary['calibration'] or 'none'}", "",
             "## Top findings across methods", "", f"{TOP_RULE[0].upper()}{TOP_RULE[1:]}. Side: the model the difference belongs to.", "",
             "| # | method (rank) | finding | side | tokens or text | uniqueness | method's own flag | calibrated flag | steering |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, t in enumerate(top_findings(runs, evidence), 1):
        what = f"text: {t['text'][:100]}" if t["text"] else " ".join(repr(x) for x in t["tokens"])
        lines.append(f"| {n} | {t['method']} (#{t['rank']}) | `{_md(t['id'])}` | {side.get(t['side'], t['side'])} | {_md(what)} | "
                     f"{t['uniqueness']:.4g} | {'yes' if t['flagged'] else 'no'} | {t['calibrated']} | {_md(t['effect'] or 'not steered')} |")
    lines += ["", "## Methods", "",
              "| method | status | findings | flagged (method) | clear null threshold | top findings (side, tokens) |", "|---|---|---|---|---|---|"]
    for r in runs:
        tops = "; ".join(f"`{_md(f.id)}` ({f.side}: {_md(' '.join(repr(t) for t in f.tokens[:4]))})" for f in r.findings[:top])
        lines.append(f"| {r.key} | {r.status} | {r.n_findings} | {r.n_flagged} | {r.n_calibrated if not r.calibration else 'n/a'} | "
                     f"{tops or _md(r.error[:120])} |")
    atomic_write(out / "findings.md", "\n".join(lines) + "\n")
