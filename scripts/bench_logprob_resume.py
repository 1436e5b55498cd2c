"""logprob_diff's per-model pass from the tokens vs resumed from the collected residuals, measured in one run.

    python scripts/bench_logprob_resume.py [--model smollm2-135m] [--texts 128] [--dtype auto] [--repeats 2]

Collects `--texts` chat texts (the base model's own answers to neutral prompts, as the audit corpus holds) at the
collection layer (0.5: residual index 15 of SmolLM2's 30 blocks) into a fresh store, then times
`outputs._side_pass` over them (i) from the tokens (all blocks and the LM head) and (ii) resumed from the store
(`outputs.Resume`: the blocks above the stored layer and the head), best of `--repeats`, and prints tokens/s, the
ratio and the largest difference of the two passes' log-probabilities and residuals.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from diffbench.core.activations import TextSet
from diffbench.harness.data.generate import chat_prompt
from diffbench.harness.data.store import collect
from diffbench.harness.models import load_model
from diffbench.methods._shared import outputs
from diffbench.methods._shared.chat import chat_header, response_start
from diffbench.tasks.neutral import neutral_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=128)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    model = load_model(args.model, dtype=args.dtype)
    prompts = neutral_prompts()[: args.texts]
    # a fixed answer-like continuation per prompt: the pass's cost depends on lengths, not on what the answer says
    texts = [chat_prompt(model.tokenizer, p) + " ".join(neutral_prompts()[(i * 7) % 300 : (i * 7) % 300 + 4])
             for i, p in enumerate(prompts)]
    layer = model.n_layers - 1  # logprob_diff's readout layer: the input of the last block
    with tempfile.TemporaryDirectory() as tmp:
        store = collect(model, TextSet.of("bench-logprob", texts), [0.5], root=Path(tmp) / "acts", progress=False)
        chosen, seqs = outputs.store_sequences(store, len(texts))
        header = chat_header(model.tokenizer)
        starts = [response_start(s, header) for s in seqs]
        keep = [i for i in range(len(seqs)) if starts[i] < len(seqs[i])]
        n_tok = sum(len(seqs[i]) for i in keep)
        resume = outputs.Resume.of(store, model, layer)
        assert resume is not None, "the store holds no layer below the pass's readout layer"

        def timed(r, tag):
            best, out = float("inf"), None
            for k in range(args.repeats):
                outputs._SIDES.clear()
                t0 = time.perf_counter()
                out = outputs._side_pass(model, seqs, starts, keep, layer, args.batch_size, (tag, k), False, r, chosen)
                best = min(best, time.perf_counter() - t0)
            return best, out

        t_full, full = timed(None, "full")
        t_res, res = timed(resume, "resumed")
    dlp = max(float((full[0][i] - res[0][i]).abs().max()) for i in keep)
    dh = max(float((full[1][i] - res[1][i]).abs().max()) for i in keep)
    print(f"model {args.model} ({model.dtype}), {len(keep)} texts / {n_tok} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"from the tokens (blocks 0-{model.n_layers - 1} + head): {n_tok / t_full:,.0f} tokens/s ({t_full:.1f} s)")
    print(f"resumed at residual {resume.layer} (blocks {resume.layer}-{model.n_layers - 1} + head): "
          f"{n_tok / t_res:,.0f} tokens/s ({t_res:.1f} s)")
    print(f"speed-up {t_full / t_res:.2f}x; largest |difference|: log-prob {dlp:.2e}, residual {dh:.2e}")


if __name__ == "__main__":
    main()
