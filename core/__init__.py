"""The contract every part of diffbench shares, and that imports none of them.

harness/ (the pipeline), methods/ (the diffing methods) and tasks/ (behaviors and detectors) all import from
here; this package imports nothing from them. What lives here:

    findings.py     Finding, Readout (declarative per-token scores), validation, save/load
    method.py       Method, MethodConfig, PairContext, the method registry
    activations.py  TextSet, LayerActs, ActivationStore (reading), PairedActivations
    model.py        LoadedModel (module, tokenizer, identity); families/ says where each architecture keeps what
    capture.py      residual-stream capture with forward hooks
    stream.py       paired activation rows computed on the fly (no store) and a shuffle buffer over them
    lens.py         the logit lens
    env.py          cache folder, device, dtype, CPU threads, `say` (a progress line)
    io.py           atomic writes, checked JSON, stable hashes, cache locks
    registry.py     named registries (methods, detectors, model families, metrics)
    typecheck.py    the one type checker for config values (method configs, the run config schema)
    plugins.py      loading code from outside the package

A method from outside the package needs only this package's names:

    from diffbench.core import Finding, Method, MethodConfig, PairContext, Readout, register_method
"""

from .findings import NEVER_FIRES, Finding, InvalidFindingsError, Readout, load_findings, rank, save_findings, validate_findings
from .method import (METHODS, Method, MethodConfig, NotApplicableError, PairContext, make_config, register_method,
                     save_run_metrics, work_stem)

__all__ = ["NEVER_FIRES", "Finding", "InvalidFindingsError", "Readout", "load_findings", "rank", "save_findings",
           "validate_findings", "METHODS", "Method", "MethodConfig", "NotApplicableError", "PairContext", "make_config",
           "register_method", "save_run_metrics", "work_stem"]
