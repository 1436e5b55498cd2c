"""Crosscoder family: L1 crosscoder, BatchTopK crosscoder with Latent Scaling, Dedicated Feature Crosscoder,
and the untrained BatchTopK crosscoder as a chance floor (random_dictionary).

`reference.py` holds the plain-torch sparse ops (the CPU default), `kernels.py` their Triton
versions (selected with backend=triton, or backend=auto on CUDA); `model.py` the shared
crosscoder, training and metrics; `common.py` data preparation and findings.
"""

from . import batchtopk, dfc, l1, random_dictionary  # noqa: F401  (registers the methods)
from .batchtopk import BatchTopKCrosscoder
from .dfc import DedicatedFeatureCrosscoder
from .l1 import L1Crosscoder
from .random_dictionary import RandomDictionary

__all__ = ["L1Crosscoder", "BatchTopKCrosscoder", "DedicatedFeatureCrosscoder", "RandomDictionary"]
