"""Random-dictionary floor: the BatchTopK crosscoder with its random initial weights, never trained.

Why: an audit of SAE benchmarks (arXiv 2602.14111) found that frozen random sparse autoencoders
nearly match trained ones on several metrics, so a dictionary method's score means little until it
is compared with the same dictionary untrained. `random_directions` is the floor for "any direction";
this is the floor for "any crosscoder latent": what the BatchTopK crosscoder's readouts, selection
rule and logit lens give when the dictionary has learned nothing. A benchmark that scores it well
above `random_directions`, or near the trained crosscoder, is rewarding the form of the findings,
not what was learned.

"Same width and readout" means it is `BatchTopKCrosscoder` with `steps` = 0 (`fit` runs the same
code): the same `Crosscoder` module (dict_size latents, shared section only), initialised exactly as
the trained one starts (unit-norm random decoder rows, seeded by `ctx.seed`, encoder = decoder,
b_enc = 0, b_dec = the training rows' mean; no data-initialised latents, as `data_init_frac` = 0),
no gradient step, then the inference threshold set the way the trained model's final threshold is,
by `train.refit_threshold` (on calibration rows, of the thresholds giving L0 between k/2 and 2k the one that
reconstructs them best; the calibration rows are kept out of training, which here has no steps anyway). Findings come
from `BatchTopKCrosscoder.select` unchanged (relative decoder norm, Latent Scaling where the widths
match, uniqueness, flag rule) and have exactly the BatchTopK form: a linear ReLU readout with that
threshold over both models' raw activations, the owning model's decoder row as direction, tokens
by logit lens. The training metrics (held-out EV, L0, dead fraction) are written as for the trained
crosscoders, so the report shows how badly a random dictionary reconstructs.

Expect: every random decoder row has norm 1 in both models, so every relative norm is 0.5 up to
float rounding and the flag rule (r >= flag_b or r <= flag_a) flags nothing. The rounding also picks
the Latent Scaling candidates (the largest max(r, 1 - r)) and the side (r >= 0.5: B; about 95% of
the candidates at d = 576 and 2048 latents); the ranking is 0.5 * (1 - clip(max(nu_r, nu_eps), 0, 1))
of random latents, whose nu are noise around 0 (negative ones rank first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...core import PairContext, register_method
from ._lib.batchtopk_base import BatchTopKBase, BatchTopKConfig
from ._lib.method import PairData
from ._lib.module import Crosscoder


@dataclass
class RandomDictionaryConfig(BatchTopKConfig):
    steps: int = 0  # never trained: the BatchTopK crosscoder as initialised (batch_size: rows per threshold-refit batch)


@register_method
class RandomDictionary(BatchTopKBase):
    name = "random_dictionary"
    stochastic = True
    floor = True
    Config = RandomDictionaryConfig
    cfg: RandomDictionaryConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.cfg.steps != 0:
            raise ValueError(f"{self.name} takes no gradient steps (steps must be 0, got {self.cfg.steps}); "
                             "use batchtopk_crosscoder for a trained dictionary")

    def train_steps(self) -> int:
        return 0  # never trained, whatever stream_tokens says

    def fit(self, ctx: PairContext) -> tuple[Crosscoder, PairData, dict[str, Any]]:
        cc, data, metrics = super().fit(ctx)  # train() with 0 steps: no update, threshold by the refit
        if not torch.isfinite(cc.threshold):
            raise RuntimeError(f"{self.name}: the threshold refit left no inference threshold")
        # what only a training run has: no loss, no running threshold estimate, and "dead in the last
        # dead_tokens training tokens" is vacuous with none; report dead on the training sample instead
        metrics["final_loss"] = None
        metrics.pop("threshold_ema", None)
        metrics["dead_frac_train"] = float((metrics["_fires_train"] == 0).float().mean())
        return cc, data, metrics
