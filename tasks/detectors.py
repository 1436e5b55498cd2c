"""Programmatic behavior detectors: does a generated response show the planted behavior?

A detector is declared in a spec as a mapping with a `type`; a new type is one
class registered in `DETECTORS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.registry import Registry

DETECTORS: Registry[type] = Registry("detector type")

MAX_PATTERN = 1000  # characters of a detector pattern


def _parse(pattern: str, flags: int):
    try:
        from re import _parser as parser  # Python 3.11+
    except ImportError:  # pragma: no cover
        import sre_parse as parser
    return parser, parser.parse(pattern, flags)


def check_pattern(pattern, ignore_case: bool = True) -> re.Pattern:
    """Compile a spec's detector pattern, refusing what could backtrack catastrophically (issue #39: `(a+)+$` checked
    against a spec's own responses hung validation). `re` cannot be given a time limit, so the check is static: a
    variable-length repeat inside a repeat (`(a+)+`, `(\\w*\\s?)*`, `(.*x){20}`), or alternatives inside a repeat that
    can start alike (`(a|ab)+`), are refused; a pattern with one level of repetition backtracks polynomially at
    worst, on responses of a few hundred characters."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern is {len(pattern):,} characters long; at most {MAX_PATTERN} are allowed")
    flags = re.IGNORECASE if ignore_case else 0
    compiled = re.compile(pattern, flags)
    parser, tree = _parse(pattern, flags)
    c = parser  # the opcode constants live in the parser module's namespace
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT} | ({c.POSSESSIVE_REPEAT} if hasattr(c, "POSSESSIVE_REPEAT") else set())

    def first(seq) -> object:
        """The literal an alternative must start with, or None if it may start with anything (or nothing)."""
        for op, av in seq:
            if op is c.LITERAL:
                return chr(av).lower() if ignore_case else chr(av)
            if op is c.SUBPATTERN:
                return first(av[-1])
            return None
        return None

    def walk(seq, in_repeat: bool) -> None:
        for op, av in seq:
            if op in repeats:
                lo, hi, sub = av
                if in_repeat and lo != hi:
                    raise ValueError(f"pattern {pattern!r} nests a repeat inside a repeat, which can backtrack without end "
                                     "(e.g. (a+)+); write it without the nesting")
                walk(sub, in_repeat or hi > 1)
            elif op is c.SUBPATTERN:
                walk(av[-1], in_repeat)
            elif op is c.BRANCH:
                alts = av[1]
                if in_repeat:
                    starts = [first(a) for a in alts]
                    if None in starts or len(set(starts)) < len(starts):
                        raise ValueError(f"pattern {pattern!r} repeats alternatives that can start alike, which can "
                                         "backtrack without end (e.g. (a|ab)+); make them start differently")
                for a in alts:
                    walk(a, in_repeat)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                walk(av[1], in_repeat)
            elif getattr(c, "ATOMIC_GROUP", None) is not None and op is c.ATOMIC_GROUP:
                walk(av, in_repeat)
            elif op is c.GROUPREF_EXISTS:
                walk(av[1], in_repeat)
                if av[2]:
                    walk(av[2], in_repeat)

    walk(tree, False)
    return compiled


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
        self._re = check_pattern(self.pattern, self.ignore_case)

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
        self._re = check_pattern(self.pattern, self.ignore_case)

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
