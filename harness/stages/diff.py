"""Stage 3, diff: every method on every pair (and seed), findings saved beside a status record (harness/status.py).

Pairs are outermost: a pair's two models stay loaded for all its methods, and methods that share a per-pair
computation (kl_diff and logit_diff_tokens share one forward pass) find it cached. A method that raises, exits
or returns invalid findings is recorded as failed and the run goes on; findings already saved from the same
method config and the same inputs are reused (resume)."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict

import torch

from ...core import METHODS, NotApplicableError, rank, save_findings, validate_findings
from ...core.io import write_json
from ..scoring import PairResult
from ..snippets import attach_snippets
from ..status import findings_digest, findings_intact, read_status
from ..suite import Pair
from ..workspace import Workspace, say

log = logging.getLogger(__name__)


def run(ws: Workspace) -> None:
    for pair in ws.suite.pairs:
        status = ws.pair_status(pair)
        inputs = ws.pair_inputs(pair) if status == "ok" else ""
        for key, mcfg in ws.methods.items():
            for seed in ws.seeds_for(mcfg["name"], pair):
                if not _done(ws, key, pair, seed, inputs):
                    _diff_one(ws, key, mcfg, pair, seed, status, inputs)


def _done(ws: Workspace, key: str, pair: Pair, seed: int, inputs: str) -> bool:
    """Saved findings of this method, pair and seed that are intact and were made from the same config and inputs."""
    path = ws.finding_path(key, pair, seed)
    prev = read_status(path.with_suffix(".status.json"), missing_ok=True)
    same_config = prev.get("config_hash") in (None, "", ws.config_hashes[key])  # records from before the hash: the same
    same_inputs = prev.get("inputs_hash") == inputs
    done = prev.get("status") == "not_applicable" or (prev.get("status") == "ok" and findings_intact(path, prev))
    if prev.get("status") == "ok" and not done:
        say(f"diff {key} on {pair.id} seed {seed}: saved findings missing or corrupt (checksum); recomputing")
    if done and same_config and same_inputs:
        return True  # failed and excluded runs are retried
    if prev and not same_config:
        say(f"diff {key} on {pair.id} seed {seed}: method config changed since its saved findings; recomputing")
    elif done and not same_inputs:
        say(f"diff {key} on {pair.id} seed {seed}: the pair's inputs (models, corpus, layers) "
            f"{'changed' if prev.get('inputs_hash') else 'were not recorded'} since its saved findings; recomputing")
    return False


def _diff_one(ws: Workspace, key: str, mcfg: dict, pair: Pair, seed: int, status: str, inputs: str) -> None:
    path = ws.finding_path(key, pair, seed)
    status_path = path.with_suffix(".status.json")
    result = PairResult(key, seed, pair.id, pair.kind, pair.behaviors, "ok", config_hash=ws.config_hashes[key], inputs_hash=inputs)
    if status != "ok":
        result.status, result.error = "excluded", status
        write_json(status_path, asdict(result))
        return
    t0 = time.time()
    try:
        ctx = ws.pair_context(pair, seed, work_dir=path.parent)
        torch.manual_seed(seed)
        findings = METHODS.get(mcfg["name"])(**(mcfg.get("params") or {})).find(ctx)
        validate_findings(findings, ctx)
        findings = rank(findings)
        # a cross-tokenizer pair's snippets are in each model's own tokens, read from its store: no shared text set
        texts = ws.corpus(pair.a) if ctx.corpus.alignment is None else None
        attach_snippets(findings, ctx.corpus, texts, ctx.model_a.tokenizer, ws.collect_cfg["max_length"],
                        tokenizer_b=ctx.model_b.tokenizer)
        save_findings(path, findings, {"method": key, "pair": pair.id, "seed": seed})
        result.findings_sha = findings_digest(path)
        result.n_findings = len(findings)
        result.n_flagged = sum(f.flagged for f in findings)
    except NotApplicableError as e:
        result.status, result.error = "not_applicable", str(e)
    except (Exception, SystemExit) as e:  # a crashing (or exiting) method is recorded, the run goes on
        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
        log.error("method %s failed on %s: %s", key, pair.id, traceback.format_exc())
        say(f"method {key} FAILED on {pair.id}: {result.error}")
    result.seconds = time.time() - t0
    write_json(status_path, asdict(result))
    if result.status == "ok":
        say(f"diff {key:22s} {pair.id:44s} seed {seed}: {result.n_findings} findings, {result.n_flagged} flagged ({result.seconds:.1f}s)")
