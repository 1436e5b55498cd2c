"""Per-token KL(p_B || p_A) on completions sampled from model B of the audit prompts: which of B's own answers
does A find least like B? (kl_diff measures the KL on neutral corpus text; the published setting, arXiv
2605.00994, measures the output baselines on B's samples, where the planted behavior is expressed.)

The samples are `logprob_diff_sampled`'s, from the same in-memory cache (`_shared/sampled.py`: same pair, corpus,
texts, generation settings and seed, so the pair is sampled once when both run). Both models run with their LM
heads over prompt + completion; at each scored completion position the KL of the next-token distributions
KL(p_B || p_A) (the distribution B sampled that token from, against A's at the same place) is kept. A text's score
is its mean KL over the scored positions (nats/token, >= 0, so every finding is side "b"). Findings (`kls:text<idx>`)
are built as logprob_diff's (`outputs.rank_texts`): flagged by the robust z of the score among all texts; tokens =
the completion tokens at the positions of the largest KL (`info["kls"]`); readout = the text's mean difference
h_B - h_A at the final residual layer over the scored positions, or the tokens' logit lens where that vanishes.
`exclude_template` (default on, as in logprob_diff_sampled, for the same reason: B's end of turn, a term of every
text's mean that follows answer length) leaves the template's own positions out.

Needs one vocabulary and equal depth and width (a KL over two vocabularies is not defined; NotApplicableError
otherwise). Cost: B's generation (shared) plus one forward pass of each model with LM heads over the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, PairContext, register_method
from ..core.env import cpu_threads
from ._shared.outputs import TextFindingOptions, check_shared_vocabulary, rank_texts
from ._shared.sampled import Sampling, kl_values, sample_completions, sampled_text_scores


@dataclass
class KLDiffSampledConfig(MethodConfig):
    n_texts: int | None = None  # corpus texts whose prompts model B completes; None = all
    max_new_tokens: int = 48  # tokens B samples per prompt (the corpus's own answers are 48)
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    exclude_template: bool = True  # leave the chat template's own tokens (B's end of turn) out of the score
    n_findings: int = 20  # texts reported, by mean KL
    n_tokens: int = 10  # tokens per finding: the completion tokens at its largest-KL positions
    flag_z: float = 3.0  # flag when |score - median| > flag_z x 1.4826 x MAD over all texts' scores
    readout_tokens: int = 5  # tokens of the logit-lens fallback direction
    excerpt_chars: int = 300
    batch_size: int = 8  # prompts per generation batch and texts per scoring batch
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads


@register_method
class KLDiffSampled(Method):
    name = "kl_diff_sampled"

    Config = KLDiffSampledConfig
    cfg: KLDiffSampledConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        check_shared_vocabulary(ctx)  # before sampling: nothing to compare otherwise
        with cpu_threads(c.threads, ctx.device):
            sm = sample_completions(ctx, Sampling(c.n_texts, c.max_new_tokens, c.temperature, c.batch_size))
            ss = kl_values(ctx, sm, c.exclude_template, c.batch_size)
        ts = sampled_text_scores(ss, sm, per_byte=False)
        return rank_texts(ctx, ts, TextFindingOptions("kls", c.n_findings, c.n_tokens, c.flag_z, c.readout_tokens,
                                                      c.excerpt_chars, value="kl"))
