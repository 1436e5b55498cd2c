"""One method on one pair of models: the steps the benchmark's diff stage and `diffbench diff` share.

    check_methods(configs)         every method config built once, before any model loads
    paired_activations(A, B, ...)  both models' residual streams on one corpus, paired position by position
    run_method(config, ctx, ...)   the method's findings: built, run, validated, ranked, with corpus snippets;
                                   a method that does not apply, raises or exits (sys.exit, os._exit) is
                                   recorded, never fatal
    run_group_method(method, gctx, ...)   the same for an N-way method on a group (core/nway.py)

What each caller does with the outcome (status records and resume for the benchmark, calibrated flags for the diff
tool) stays with the caller.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from ..core import METHODS, Finding, Method, NotApplicableError, PairContext, rank, validate_findings
from ..core.activations import ActivationStore, PairedActivations, TextSet
from ..core.model import LoadedModel
from ..methods import load_all_methods
from .data.align import same_tokenizer
from .data.store import pair_stores
from .report.snippets import attach_snippets

if TYPE_CHECKING:
    from ..core.nway import GroupContext, NWayMethod

Spans = list  # per text, the character spans of its shared content (data/align.py)


def paired_activations(model_a: LoadedModel, model_b: LoadedModel, collect: Callable[[LoadedModel, TextSet], ActivationStore],
                       same_texts: Callable[[], TextSet],
                       cross_texts: Callable[[], tuple[tuple[TextSet, Spans], tuple[TextSet, Spans]]],
                       max_window: int | None) -> PairedActivations:
    """Same tokenizer: both models read the same texts, row for row (`same_texts`). Different tokenizers: the same
    content in each model's own chat template (`cross_texts`: each side's texts and spans), paired where both have
    read the same text. The texts are made only on the path taken."""
    if same_tokenizer(model_a.tokenizer, model_b.tokenizer):
        texts = same_texts()
        return PairedActivations(collect(model_a, texts), collect(model_b, texts), len(texts))
    (ta, sa), (tb, sb) = cross_texts()
    return pair_stores(collect(model_a, ta), collect(model_b, tb), model_a.tokenizer, model_b.tokenizer, ta, tb,
                       spans_a=sa, spans_b=sb, max_window=max_window)


def check_methods(methods: dict, nway: bool = False) -> dict[str, Method]:
    """Each method config ({key: {"name", "params"}}) built once: an unknown name or an unknown or ill-typed
    parameter fails here, before any model loads. Returns the built methods (their resolved config and its hash).
    `nway`: the configs name N-way methods (core/nway.py's registry, conf/nway_method/)."""
    from ..core.nway import NWAY_METHODS

    load_all_methods()
    registry, what, folder = (NWAY_METHODS, "N-way method", "nway_method") if nway else (METHODS, "method", "method")
    built = {}
    for key, mcfg in methods.items():
        if not isinstance(mcfg, dict) or "name" not in mcfg:
            raise ValueError(f"{what} config {key!r} needs a `name` (the registered {what}) and optional `params`")
        cls = registry.get(mcfg["name"])
        try:  # constructors check and store their parameters, nothing more
            built[key] = cls(**(mcfg.get("params") or {}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} {key!r} (conf/{folder}/{key}.yaml or an override): {e}") from e
    return built


class MethodExitedError(BaseException):
    """A method called `os._exit`, which would end the whole process at once (no scores, no message, rc of its
    choice); `run_method` puts this in its place while the method runs. A BaseException, so that a method's own
    `except Exception` cannot swallow it."""


def _exit_guard(real_exit: Callable, pid: int) -> Callable:
    """os._exit as a method sees it: refused in this process; a forked child (multiprocessing ends its workers
    with os._exit) still exits."""

    def _exit(code: int = 0) -> None:
        if os.getpid() != pid:
            real_exit(code)
        raise MethodExitedError(f"the method called os._exit({code}), which would have ended the whole run; refused")

    return _exit


@dataclass
class MethodOutcome:
    status: str = "ok"  # ok | not_applicable | failed
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    config_hash: str = ""
    findings: list[Finding] = field(default_factory=list, repr=False)


def _guarded(out: MethodOutcome, body: Callable[[], list[Finding]]) -> MethodOutcome:
    """Run `body` (build, find, validate, rank) with os._exit refused, recording in `out` a method that does not
    apply, raises or exits instead of letting it end the run."""
    t0 = time.time()
    real_exit = os._exit
    os._exit = _exit_guard(real_exit, os.getpid())  # restored below, whatever the method does
    try:
        out.findings = body()
    except NotApplicableError as e:
        out.status, out.error = "not_applicable", str(e)
    except (Exception, SystemExit, MethodExitedError) as e:  # a crashing (or exiting) method is recorded, the caller goes on
        out.status, out.error, out.traceback = "failed", f"{type(e).__name__}: {e}", traceback.format_exc()
    finally:
        os._exit = real_exit
    out.seconds = time.time() - t0
    return out


def run_method(method_config: dict, ctx: PairContext, texts_a: TextSet | None, max_length: int,
               top: int | None = None) -> MethodOutcome:
    """`method_config` = {"name", "params"}; `texts_a` = the texts model A read (None across tokenizers, where each
    finding's snippets come from each model's own store); `top`: keep only the best findings."""
    out = MethodOutcome()

    def body() -> list[Finding]:
        method = METHODS.get(method_config["name"])(**(method_config.get("params") or {}))
        out.config_hash = method.config_hash
        torch.manual_seed(ctx.seed)
        findings = method.find(ctx)
        validate_findings(findings, ctx)
        findings = rank(findings)[:top]
        attach_snippets(findings, ctx.corpus, texts_a, ctx.model_a.tokenizer, max_length, tokenizer_b=ctx.model_b.tokenizer)
        return findings

    return _guarded(out, body)


def run_group_method(method: "NWayMethod", ctx: "GroupContext", texts: TextSet, max_length: int,
                     top: int | None = None) -> MethodOutcome:
    """`run_method` for an N-way method (built beforehand: `check_methods(..., nway=True)`) on a group: findings validated with
    `validate_group_findings`, ranked, and given snippets from the stores of the members they read (`reads`; (m, m)
    is read against the group's base where it has one)."""
    from ..core.nway import validate_group_findings

    out = MethodOutcome(config_hash=method.config_hash)

    def body() -> list[Finding]:
        torch.manual_seed(ctx.seed)
        findings = method.find(ctx)
        validate_group_findings(findings, ctx)
        findings = rank(findings)[:top]
        by_reads: dict[tuple[int, int], list] = {}
        for f in findings:
            by_reads.setdefault(tuple(f.reads), []).append(f)
        for (i, j), group in by_reads.items():
            pair = ctx.base_pair_context(j) if i == j and ctx.base is not None else ctx.pair_context(i, j)
            attach_snippets(group, pair.corpus, texts, ctx.models[j].tokenizer, max_length)
        return findings

    return _guarded(out, body)
