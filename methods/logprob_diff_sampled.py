"""logprob_diff in the published setting: the log-probability difference of the two models on completions sampled
from model B of the audit prompts, where the planted behavior is expressed (arXiv 2605.00994 ranks B's samples;
`logprob_diff` ranks the corpus's texts, i.e. the base model's answers, where a behavior B only shows in its own
answers may not appear at all).

Samples (`_shared/sampled.py`, shared with `kl_diff_sampled` through an in-memory cache): each corpus text's prompt
(its tokens through the last assistant header; a plain text: its first half) is completed by model B,
`max_new_tokens` tokens at `temperature` (0 = greedy), from a torch Generator seeded with the run's seed (a rerun is
identical), in batches with left padding and the KV cache; a completion ends at B's end-of-turn token. Both models
then score prompt + completion as logprob_diff scores a text: the gain of a completion token is
log p_B(x_t | x_<t) - log p_A(x_t | x_<t); the text's score is its mean gain over the scored completion tokens
(nats/token), or with `per_byte` their summed gain per UTF-8 byte of the scored text (nats/byte). Findings
(`lps:text<idx>`), the robust-z flag, tokens and readouts are logprob_diff's (`outputs.rank_texts`, one code for
both); `info` adds the score's unit and the sampling cost.

`exclude_template` (default on) leaves the chat template's own positions out of the score: B's end-of-turn token
(`<|im_end|>`), and any turn header it writes. A sample that ends its turn has that token as a term of its mean,
and its gain says how B's answer length changed overall (a fine-tune moves it on every prompt), not what B said; on
a short answer it weighs 1/length, enough to reorder texts by length rather than content. The unit tests show the
turn end scored only with `exclude_template=false` (a hand-made completion) and the same trigger texts first either
way on the tiny organism (whose random samples rarely end their turn), so leaving it out costs nothing there.
Both settings are reportable: one config option.

Cross-tokenizer pairs (the method is `cross_architecture`): each model reads its own corpus store (its own chat
template around the same user message), B's completion is decoded to text, and each model scores that string
tokenized by itself, followed by its own end-of-turn token where B ended its turn; the score is then always per
byte (sum log p_B - sum log p_A over the text's UTF-8 bytes: the only unit both models share). A token's value is
the byte-level gain over its bytes, each side's findings naming its own model's tokens. Without a shared
activation space (different architectures or widths) a readout cannot be a residual difference: it is the logit
lens of the finding's top tokens in the side's own model, reading that model alone (w of the other side None,
RMS-normalised input, each model at its final residual layer), as DFC's exclusive latents read their own model;
`info["readout"] = "logit_lens_one_sided"`. Plain-text prompts are skipped there (the two halves would differ).

Cost: B generates `max_new_tokens` per text with the KV cache (one forward per new token over the batch), then two
forward passes with LM heads over prompt + completion, i.e. about logprob_diff's cost plus B's generation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, PairContext, register_method
from ..core.env import cpu_threads
from ._shared.outputs import TextFindingOptions, rank_texts, shared_vocabulary
from ._shared.sampled import Sampling, logprob_gains, sample_completions, sampled_text_scores


@dataclass
class LogprobDiffSampledConfig(MethodConfig):
    n_texts: int | None = None  # corpus texts whose prompts model B completes; None = all
    max_new_tokens: int = 48  # tokens B samples per prompt (the corpus's own answers are 48)
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    exclude_template: bool = True  # leave the chat template's own tokens (B's end of turn) out of the score
    per_byte: bool = False  # score = summed gain per UTF-8 byte of the scored text (always so across tokenizers)
    n_findings: int = 20  # texts reported, by |score|
    n_tokens: int = 10  # tokens per finding: the completion tokens with the largest gain toward its side
    flag_z: float = 3.0  # flag when |score - median| > flag_z x 1.4826 x MAD over all texts' scores
    readout_tokens: int = 5  # tokens of the logit-lens direction
    excerpt_chars: int = 300
    batch_size: int = 8  # prompts per generation batch and texts per scoring batch
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads


@register_method
class LogprobDiffSampled(Method):
    name = "logprob_diff_sampled"
    cross_architecture = True

    Config = LogprobDiffSampledConfig
    cfg: LogprobDiffSampledConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        with cpu_threads(c.threads, ctx.device):
            sm = sample_completions(ctx, Sampling(c.n_texts, c.max_new_tokens, c.temperature, c.batch_size))
            ss = logprob_gains(ctx, sm, c.exclude_template, c.batch_size, ctx.progress)
        ts = sampled_text_scores(ss, sm, c.per_byte or not shared_vocabulary(ctx))
        return rank_texts(ctx, ts, TextFindingOptions("lps", c.n_findings, c.n_tokens, c.flag_z, c.readout_tokens,
                                                      c.excerpt_chars))
