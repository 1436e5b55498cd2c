"""Crosscoder family: L1 crosscoder, BatchTopK crosscoder with Latent Scaling, Dedicated Feature Crosscoder,
Delta-Crosscoder (BatchTopK plus a loss on B - A), and the untrained BatchTopK crosscoder as a chance floor
(random_dictionary).

Each file here is one method (README.md describes them and the design). What they share, the crosscoder library, is
in `_lib/` (private: `load_all_methods` skips it; `_lib/__init__.py` lists its modules).
"""

from . import batchtopk, delta, dfc, l1, random_dictionary  # noqa: F401  (registers the methods)
from .batchtopk import BatchTopKCrosscoder
from .delta import DeltaCrosscoder
from .dfc import DedicatedFeatureCrosscoder
from .l1 import L1Crosscoder
from .random_dictionary import RandomDictionary

__all__ = ["L1Crosscoder", "BatchTopKCrosscoder", "DedicatedFeatureCrosscoder", "DeltaCrosscoder",
           "RandomDictionary"]
