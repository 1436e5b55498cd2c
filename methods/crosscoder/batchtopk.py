"""BatchTopK crosscoder with Latent Scaling (Minder, Dumas et al. 2025, arXiv 2504.02922).

Training: per batch keep the k*B largest f_i * sum_m ||d_i^m|| (f = ReLU(z)) over the whole batch;
loss = sum_m ||x_m - x_hat_m||^2 + aux_coeff * (auxiliary loss: the top `aux_k` dead latents of
each token reconstruct its residual error, normalised by the error's variance; coefficient 1/32).
A running estimate of the smallest kept score (EMA, from `threshold_start_frac` of the steps) is
the inference threshold: at inference f_i counts where f_i * sum_m ||d_i^m|| > threshold.

Findings: the live latents most one-sided by relative decoder norm r (as for the L1 crosscoder),
then Latent Scaling on the `scaling_candidates` most one-sided: with u the latent's decoder row in
its own model, closed-form beta^m = <f u, y_m> / ||f u||^2 over the tokens for y = reconstruction
(beta^r) and error + the latent's own contribution (beta^eps), nu = beta^other / beta^own
(for a B-side latent nu = beta^A / beta^B). Flagged only if the relative norm says one-sided AND
nu_r < nu_r_max AND nu_eps < nu_eps_max, so a latent present but shrunk in the other model is not
flagged. Uniqueness = max(r, 1-r) * (1 - clip(max(nu_r, nu_eps), 0, 1)) (plain max(r, 1-r) when
Latent Scaling does not apply, i.e. different widths).
"""

from ...core import register_method
from ._lib.batchtopk_base import BatchTopKBase


@register_method
class BatchTopKCrosscoder(BatchTopKBase):
    name = "batchtopk_crosscoder"
