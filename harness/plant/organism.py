"""What an organism is (base model, planted behaviors or a null recipe, seed) and its plant card."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The null ladder, from no change at all to a real fine-tune with nothing planted: the identical model (a zero adapter),
# self-distillation on neutral prompts, a LoRA on generic chat (more steps, longer answers), and fake triggers.
NULL_KINDS = ("null_identical", "null_selfdistill", "null_chat", "null_fake_trigger")


@dataclass(frozen=True)
class Organism:
    """A planted (or null) model: `name` is unique in a suite."""

    name: str
    kind: str  # "behavior" or one of NULL_KINDS
    behaviors: tuple[str, ...] = ()
    seed: int = 0
    paraphrase: int = 0  # >0: an independent copy trained on a different sample and response phrasing
    base: str | None = None  # base model name; None = the suite's model (cross-architecture suites set it)
    recipe: str = ""  # conf/plant/<recipe>.yaml laid over the run's recipe; "" = the run's (the key holds the contents)

    @property
    def is_null(self) -> bool:
        return self.kind in NULL_KINDS


@dataclass
class PlantCard:
    organism: str
    kind: str
    behaviors: list[str]
    seed: int
    passed: bool
    reasons: list[str]
    rates: dict[str, dict[str, float]]  # behavior -> {organism_T, organism_C, base_T}
    kl_to_base: float
    train_loss_first: float
    train_loss_last: float
    train_seconds: float
    gate_seconds: float
    adapter: str
    recipe: dict[str, Any]
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few generations, for the reader
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier trainings that failed the gate (retries)

