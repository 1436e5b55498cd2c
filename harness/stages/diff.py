"""Stage 3, diff: every method on every pair (and seed), findings saved beside a status record (harness/score/status.py).

Pairs are outermost: a pair's two models stay loaded for all its methods, and methods that share a per-pair
computation (kl_diff and logit_diff_tokens share one forward pass) find it cached. A method that raises, exits
or returns invalid findings is recorded as failed and the run goes on; findings already saved from the same
method config and the same inputs are reused (resume)."""

from __future__ import annotations

import logging
from dataclasses import asdict

from ...core import save_findings
from ...core.io import write_json
from ..score.scoring import PairResult
from ..pair_run import run_method
from ..score.status import findings_digest, saved_run_current
from ..suite import Pair
from ...core.env import say
from ..workspace import Workspace

log = logging.getLogger(__name__)


def run(ws: Workspace) -> None:
    for pair in ws.suite.pairs:
        status = ws.pair_status(pair)
        inputs = ws.pair_inputs(pair) if status == "ok" else ""
        for key, mcfg in ws.methods.items():
            for seed in ws.seeds_for(mcfg["name"], pair):
                if not saved_run_current(ws.finding_path(key, pair, seed), ws.config_hashes[key], inputs,
                                         f"diff {key} on {pair.id} seed {seed}"):
                    _diff_one(ws, key, mcfg, pair, seed, status, inputs)


def _diff_one(ws: Workspace, key: str, mcfg: dict, pair: Pair, seed: int, status: str, inputs: str) -> None:
    path = ws.finding_path(key, pair, seed)
    status_path = path.with_suffix(".status.json")
    result = PairResult(key, seed, pair.id, pair.kind, pair.behaviors, "ok", config_hash=ws.config_hashes[key], inputs_hash=inputs)
    if status != "ok":
        result.status, result.error = "excluded", status
        write_json(status_path, asdict(result))
        return
    ctx = ws.pair_context(pair, seed, work_dir=path.parent)
    # a cross-tokenizer pair's snippets are in each model's own tokens, read from its store: no shared text set
    texts = ws.corpus(pair.a) if ctx.corpus.alignment is None else None
    outcome = run_method(mcfg, ctx, texts, ws.collect_cfg.max_length)
    result.status, result.error, result.seconds = outcome.status, outcome.error, outcome.seconds
    if outcome.status == "ok":
        save_findings(path, outcome.findings, {"method": key, "pair": pair.id, "seed": seed})
        result.findings_sha = findings_digest(path)
        result.n_findings = len(outcome.findings)
        result.n_flagged = sum(f.flagged for f in outcome.findings)
    elif outcome.status == "failed":
        log.error("method %s failed on %s: %s", key, pair.id, outcome.traceback)
        say(f"method {key} FAILED on {pair.id}: {result.error}")
    write_json(status_path, asdict(result))
    if result.status == "ok":
        say(f"diff {key:22s} {pair.id:44s} seed {seed}: {result.n_findings} findings, {result.n_flagged} flagged ({result.seconds:.1f}s)")
