"""Crosscoder family: L1 crosscoder, BatchTopK crosscoder with Latent Scaling, Dedicated Feature Crosscoder,
and the untrained BatchTopK crosscoder as a chance floor (random_dictionary).

Each file here is one method. What they share (the crosscoder module, training, losses, evaluation,
Latent Scaling, the Triton kernels and their torch twins, data preparation) is in `methods/_shared/crosscoder/`.
"""

from . import batchtopk, dfc, l1, random_dictionary  # noqa: F401  (registers the methods)
from .batchtopk import BatchTopKCrosscoder
from .dfc import DedicatedFeatureCrosscoder
from .l1 import L1Crosscoder
from .random_dictionary import RandomDictionary

__all__ = ["L1Crosscoder", "BatchTopKCrosscoder", "DedicatedFeatureCrosscoder", "RandomDictionary"]
