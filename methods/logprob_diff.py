"""Log-probability difference of the two models on the corpus texts' responses: which texts does B like more (or less)?

Both models run with their LM heads over every corpus text by default (`outputs.response_gains`, each model's pass
resumed from the residuals collection stored, so only the blocks above them run again; the planted
contexts are ~1% of the texts, so a 16-text sample as in kl_diff would miss them). A text's response is every
position after its last assistant header (chat.py; a text without one, e.g. plain text, is all response from
position 1). The gain of the token at position t is log p_B(x_t | x_<t) - log p_A(x_t | x_<t); a text's score
is its mean gain over the response tokens (nats/token). A simple, strong output baseline (no training; the
cost is two forward passes with LM heads over the corpus): the 76-organism study of arXiv 2605.00994 found it
competitive.

Findings (`lp:text<idx>`): the `n_findings` texts with the largest |score|; side "b" where score > 0 (B likes
the text more), else "a". Uniqueness = |score|; flagged when the score is an outlier among all texts' scores:
|score - median| > `flag_z` x 1.4826 x MAD (a robust z, our rule). Tokens = the text's response tokens with
the largest gain toward the finding's side (distinct, best first, gain > 0 only); `info` holds the text
index, score, those tokens' gains (log p_B - log p_A: negative on side a) and an excerpt of the response.

Readout (the scoring protocol reads findings from residual activations, not log-probabilities): the text's
mean difference d = mean(h_B - h_A) over its response positions at the final residual layer (`layer`,
default n_layers - 1, the input of the last block), read as `difference_readout(layer, d / |d|)`: high
wherever the two models differ as they do on this text, 0 with model B replaced by model A. Direction = d
for side b, -d (in model A's space) for side a, so the readout reads the side's own model along the
reported direction with a positive weight (w_side = +unit, as DFC's one-sided latents do) and is the same
readout for either sign of the score. Where the mean difference vanishes (the residual streams agree there,
e.g. only the unembedding changed) the direction is the logit-lens direction of the finding's first
`readout_tokens` tokens (`group_direction`, in the side's model), read from RMS-normalised activations as
in kl_diff; `info["readout"]` says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, PairContext, register_method
from ..core.env import cpu_threads
from ._shared.outputs import TextFindingOptions, rank_texts, response_gains, response_text_scores, shared_vocabulary
from ._shared.sampled import corpus_answers_as_samples, cross_tokenizer_gains, sampled_text_scores


@dataclass
class LogprobDiffConfig(MethodConfig):
    n_texts: int | None = None  # corpus texts both models run on, with their LM heads; None = all
    n_findings: int = 20  # texts reported, by |score|
    n_tokens: int = 10  # tokens per finding: the response tokens with the largest gain toward its side
    flag_z: float = 3.0  # flag when |score - median| > flag_z x 1.4826 x MAD over all texts' scores
    readout_tokens: int = 5  # tokens of the logit-lens fallback direction
    excerpt_chars: int = 300
    layer: int | None = None  # residual index of the directions/readouts; None = n_layers - 1
    batch_size: int = 8
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads (every core under the diffbench command)


@register_method
class LogprobDiff(Method):
    name = "logprob_diff"
    cross_architecture = True  # across tokenizers: per-byte scores, one-sided readouts (find_across_tokenizers)

    Config = LogprobDiffConfig
    cfg: LogprobDiffConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        if not (shared_vocabulary(ctx) and ctx.shared_space):  # no position-by-position residual difference
            return self.find_across_tokenizers(ctx)
        ts = response_text_scores(response_gains(ctx, c.n_texts, c.batch_size, c.layer, c.threads))
        return rank_texts(ctx, ts, TextFindingOptions("lp", c.n_findings, c.n_tokens, c.flag_z, c.readout_tokens,
                                                      c.excerpt_chars))

    def find_across_tokenizers(self, ctx: PairContext) -> list[Finding]:
        """Models with different tokenizers (or activation spaces): each model scores the corpus's answer text after its own chat template
        (its own store), and a text's score is sum log p_B - sum log p_A per UTF-8 byte of the answer, the only unit
        both share; readouts are one-sided logit lenses (`_shared/sampled.py`: `cross_tokenizer_gains`)."""
        c = self.cfg
        with cpu_threads(c.threads, ctx.device):
            sm = corpus_answers_as_samples(ctx, c.n_texts)
            ss = cross_tokenizer_gains(ctx, sm, False, c.batch_size)
        return rank_texts(ctx, sampled_text_scores(ss, sm, per_byte=True),
                          TextFindingOptions("lp", c.n_findings, c.n_tokens, c.flag_z, c.readout_tokens, c.excerpt_chars))
