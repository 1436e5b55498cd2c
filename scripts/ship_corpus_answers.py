"""Write the shipped audit-corpus answers (zoo/answers/<base>-<answer_tokens>.json, harness/data/answers.py): the
base model's greedy answers, in fp32, to every prompt of the named suites' audit corpora.

    python scripts/ship_corpus_answers.py                 # quick, full and zoo on smollm2-135m
    python scripts/ship_corpus_answers.py --suites quick  # one suite (the file then holds only its prompts)

Answers already in the distill cache (same model, fp32, same length) are reused, not regenerated. Regenerate the file
whenever the corpus plan changes (the everyday pool, a spec's audit split, the corpus options of a suite)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from diffbench.core.env import cpu_model, say, source_commit
from diffbench.harness.data.answers import ship
from diffbench.harness.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", nargs="+", default=["quick", "full", "zoo"])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    prompts: list[str] = []
    answer_tokens = None
    model = None
    with initialize_config_module(config_module="diffbench.conf", version_base=None):
        for suite in args.suites:
            cfg = compose("config", overrides=[f"suite={suite}", f"model={args.model}", "dtype=fp32", "progress=true",
                                               "run_dir=/tmp/diffbench-ship-answers"])
            ws = Workspace(cfg, Path(cfg.run_dir))
            plan = ws.corpus_plan()
            tokens = ws.suite.corpus.answer_tokens
            if answer_tokens not in (None, tokens):
                raise SystemExit(f"suite {suite} answers in {tokens} tokens, the others in {answer_tokens}: ship them apart")
            answer_tokens = tokens
            model = model or ws.model(ws.base_of("base"))
            prompts += plan.prompts
            say(f"{suite}: {len(plan.prompts)} corpus prompts")
    t0 = time.time()
    path = ship(model, prompts, answer_tokens, machine=cpu_model(), commit=source_commit())
    say(f"{len(set(prompts))} answers in {path} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
