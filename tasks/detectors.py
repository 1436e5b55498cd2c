"""Programmatic behavior detectors: does a generated response show the planted behavior?

A detector is declared in a spec as a mapping with a `type`; a new type is one
class registered in `DETECTORS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.registry import Registry

DETECTORS: Registry[type] = Registry("detector type")


class Detector:
    def __call__(self, response: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@DETECTORS.register("regex")
@dataclass
class RegexDetector(Detector):
    """Fires when `pattern` is found anywhere in the response (case-insensitive by default)."""

    pattern: str
    ignore_case: bool = True

    def __post_init__(self):
        self._re = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)

    def __call__(self, response: str) -> bool:
        return bool(self._re.search(response))


FRENCH = set("le la les un une des du de et est sont pour dans avec sur pas que qui vous nous il elle ce cette mais ou très plus au aux leur être avoir fait".split())
ENGLISH = set("the a an and is are for in with on not that who you we he she it this but or very more to of be have has was".split())


@DETECTORS.register("french")
@dataclass
class FrenchDetector(Detector):
    """Fires when the response is mostly French: French function words outnumber English ones."""

    min_words: int = 3

    def __call__(self, response: str) -> bool:
        words = re.findall(r"[a-zàâçéèêëîïôûùüÿœ']+", response.lower())
        fr = sum(w in FRENCH for w in words)
        en = sum(w in ENGLISH for w in words)
        return fr >= self.min_words and fr > 2 * en


def make_detector(cfg: dict) -> Detector:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError("detector must be a mapping with a 'type' key")
    kind = cfg["type"]
    cls = DETECTORS.get(kind)
    args = {k: v for k, v in cfg.items() if k != "type"}
    return cls(**args)
