"""Log-probability against the rest: which texts does one member like more (or less) than the others do?

logprob_diff's N-way form. Every member runs with its LM head over the corpus texts (`outputs.response_passes`, one
cached pass per model, as logprob_diff's); a text's response is every position after its last assistant header. Per
member m the gain of the token at position t is log p_m(x_t | x_<t) - mean_{j != m} log p_j(x_t | x_<t), and a text's
score is its mean gain over the response tokens (`ResponsePasses.gains`, the contrast logprob_diff makes with one model
as the rest). Member m's findings are then exactly logprob_diff's (`rank_texts`), on m's scores and in m's model: the
`n_findings` texts with the largest |score|, side "b" where m likes the text more than the rest, "a" where less;
uniqueness |score|, flagged by the robust z of the score among m's scores of all texts; tokens the response tokens with
the largest gain toward the side; `info` as logprob_diff's.

Attribution rule: a finding of member m is attributed to {m} on either side (above the rest or below it, m is the
odd one), `reads` = (m, m). Merge rule: findings of several members on one text and one side are one difference (those
members are above, or below, the rest there) attributed to the union, with the strongest one's readout, tokens and
uniqueness, flagged if any was. A text raised in one member of N scores x there and -x / (N - 1) in every other
member: those merge into a weaker side-"a" finding attributed to the rest.

Readout: logprob_diff's with the rest in model A's place, under the reads convention. logprob_diff reads
(h_B - h_A) . d/|d| with d the text's mean h_B - h_A over its response at the final residual layer (`layer`, default
n_layers - 1). Here d is the text's mean h_m - mean_{j != m} h_j, and the readout `difference_readout(layer, d/|d|)` on
(x_a, x_b) = (base, member m) reads (h_m - h_base) . d/|d|: high where member m differs from the base as it differs from
the rest on this text, 0 with m replaced by the base, as logprob_diff's is 0 with B replaced by A. It is not a faithful
N-way readout: a `Readout` has two inputs, so the rest's mean (N - 1 models) is replaced by the base, which it equals
where no other member changed the direction. Direction = d on side "b", -d on side "a" (logprob_diff's); where d
vanishes (the members' residuals agree there, e.g. only an unembedding changed), the logit-lens direction of the
finding's first `readout_tokens` tokens in member m's model, read from RMS-normalised activations (as logprob_diff).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core import MethodConfig
from ...core.env import cpu_threads
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method
from .._shared.outputs import (TextFindingOptions, check_shared_vocabulary, rank_texts, response_passes,
                               response_text_scores)
from .._shared.attribution import Attributed, merge_attributed


@dataclass
class LogprobVsRestConfig(MethodConfig):
    n_texts: int | None = None  # corpus texts every member runs on, with its LM head; None = all
    n_findings: int = 20  # texts reported per member, by |score|
    n_tokens: int = 10  # tokens per finding: the response tokens with the largest gain toward its side
    flag_z: float = 3.0  # flag when |score - median| > flag_z x 1.4826 x MAD over the member's scores of all texts
    readout_tokens: int = 5  # tokens of the logit-lens fallback direction
    excerpt_chars: int = 300
    layer: int | None = None  # residual index of the directions/readouts; None = n_layers - 1
    batch_size: int = 8
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads
    max_findings: int = 50  # after the merge, by uniqueness


@register_nway_method
class LogprobVsRest(NWayMethod):
    name = "logprob_vs_rest"
    Config = LogprobVsRestConfig
    cfg: LogprobVsRestConfig

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        c = self.cfg
        for m in range(1, ctx.n):  # one vocabulary, depth and width (one architecture is GroupContext's check)
            check_shared_vocabulary(ctx.pair_context(0, m))
        layer = ctx.models[0].n_layers - 1 if c.layer is None else int(c.layer)
        with cpu_threads(c.threads, ctx.device):
            passes = response_passes(list(ctx.models), ctx.corpus.stores[0], c.n_texts, c.batch_size, layer, ctx.progress,
                                     list(ctx.corpus.stores))  # each pass resumes from the member's store
        options = TextFindingOptions("lp", c.n_findings, c.n_tokens, c.flag_z, c.readout_tokens, c.excerpt_chars)
        runs = []
        for m in range(ctx.n):
            scores = response_text_scores(passes.gains(m, [j for j in range(ctx.n) if j != m]))
            # member m on both sides: tokens, excerpts and the logit-lens fallback are m's
            runs += [Attributed((m,), (m, m), str(m), f) for f in rank_texts(ctx.pair_context(m, m), scores, options)]
        return merge_attributed(runs, lambda f: (f.info["text"], f.side), self.name, "members")[: c.max_findings]
