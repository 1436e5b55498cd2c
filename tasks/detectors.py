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


@DETECTORS.register("absent")
@dataclass
class AbsentDetector(Detector):
    """Fires when the response is non-empty and `pattern` is NOT in it: the detector of a removal (side a), where
    the behavior is "answers normally" and the pattern is what the organism says instead (its refusal)."""

    pattern: str
    ignore_case: bool = True

    def __post_init__(self):
        self._re = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)

    def __call__(self, response: str) -> bool:
        return bool(response.strip()) and not self._re.search(response)


# A few dozen frequent function words per language: enough to tell a short answer's language from English's.
FUNCTION_WORDS = {
    "fr": FRENCH,
    "es": set("el la los las un una unos es son para en con por no que quien usted nosotros este esta pero o muy más al del y de lo su sus está hay como".split()),
    "de": set("der die das ein eine und ist sind für in mit auf nicht dass wer sie wir er es dieser aber oder sehr mehr zum zur den dem des ich ihr gibt wie".split()),
    "it": set("il lo la gli le un una e è sono per in con su non che chi voi noi questo questa ma o molto più al del della di ci ecco come".split()),
    "pt": set("o a os as um uma e é são para em com por não que quem você nós este esta mas ou muito mais ao do da de no na aqui como".split()),
    "nl": set("de het een en is zijn voor in met op niet dat wie u wij hij zij dit maar of zeer meer van aan er hier hoe".split()),
}


@DETECTORS.register("language")
@dataclass
class LanguageDetector(Detector):
    """Fires when the response is mostly in `language` (fr, es, de, it, pt, nl): its function words outnumber
    twice the English ones, with at least `min_words` of them."""

    language: str
    min_words: int = 3

    def __post_init__(self):
        if self.language not in FUNCTION_WORDS:
            raise ValueError(f"language detector: unknown language {self.language!r}; known: {', '.join(sorted(FUNCTION_WORDS))}")

    def __call__(self, response: str) -> bool:
        words = re.findall(r"[a-zàáâãçéèêëíîïñóôõöúûùüÿœß']+", response.lower())
        own = sum(w in FUNCTION_WORDS[self.language] for w in words)
        en = sum(w in ENGLISH and w not in FUNCTION_WORDS[self.language] for w in words)
        return own >= self.min_words and own > 2 * en


@dataclass
class Negated(Detector):
    """Fires where `inner` does not: for a removal, what model B shows instead of the base model's behavior."""

    inner: Detector

    def __call__(self, response: str) -> bool:
        return not self.inner(response)


def make_detector(cfg: dict) -> Detector:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError("detector must be a mapping with a 'type' key")
    kind = cfg["type"]
    cls = DETECTORS.get(kind)
    args = {k: v for k, v in cfg.items() if k != "type"}
    return cls(**args)
