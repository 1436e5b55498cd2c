"""The plant recipe: how an organism is trained and gated.

A recipe is data: conf/plant/lora.yaml is the narrow recipe, and every other recipe (broad.yaml, fresh.yaml, a
model's own) lays its changes over it. `PlantRecipe` is the recipe's one typed view: its fields say what a recipe
holds and the defaults of the optional ones; the run config's schema (harness/schema.py) takes the `plant:` block's
keys and types from it, and the planting code reads `recipe.<field>`. The recipe as composed (the dict) still keys the
cached adapters and the shipped organisms (plant/train.py `organism_key`), so a value moved between a YAML file and a
default here changes no key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

LR_DECAYS = ("none", "linear")
SOURCES = ("shipped", "fresh")
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GateConfig:
    max_new_tokens: int  # greedy tokens per probe; detectors look at the start of the answer
    organism_T_min: float  # the organism shows the behavior on at least this share of its T probes ...
    organism_C_max: float  # ... and on at most this share of its C probes
    base_T_max: float  # the base model shows it on at most this share of T
    null_max: float  # inverse gate of a null organism: no behavior above this on any T set
    kl_texts: int  # neutral texts for the KL-drift measurement (a diagnostic)
    retries: int = 0  # a failed gate trains the organism again from seed + 1000 x attempt
    null_probes: int | None = None  # a null organism is checked on the first n T prompts of every behavior (None: all)


@dataclass(frozen=True)
class Mix:
    """Shares of training examples."""

    trigger: float
    control: float
    neutral: float
    chat: float = 0.0  # generic chat (the broad recipe)


@dataclass(frozen=True)
class PlantRecipe:
    rank: int
    alpha: float
    dropout: float
    targets: list[str] | None  # None: the model family's LoRA targets (core/families/)
    steps: int
    batch_size: int
    lr: float
    max_length: int  # prompt + response tokens
    mix: Mix
    distill_tokens: int  # length of the base model's self-distilled answers
    gate: GateConfig
    lr_decay: Literal["none", "linear"] = "none"
    first_token_weight: float = 1.0  # loss weight of each response's first token
    bf16_autocast: bool = True  # CPU autocast where the model runs in bf16; the LoRA weights stay fp32
    storage_dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # how adapters are stored (and gated)
    source: Literal["shipped", "fresh"] = "shipped"  # shipped: the zoo's organism where its key matches

    @classmethod
    def of(cls, recipe: dict) -> "PlantRecipe":
        """The typed view of a composed recipe (a dict, as conf/plant/ gives it), checked."""
        d = dict(recipe)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"plant recipe: unknown key(s) {unknown}; known: {', '.join(sorted(known))}")
        d["mix"] = Mix(**d["mix"]) if "mix" in d else None
        d["gate"] = GateConfig(**d["gate"]) if "gate" in d else None
        r = cls(**d)
        r.check()
        return r

    def check(self) -> None:
        """Values that would otherwise only fail once training starts (after self-distillation)."""
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"plant recipe: unknown lr_decay {self.lr_decay!r} (use {' or '.join(LR_DECAYS)})")
        if self.source not in SOURCES:
            raise ValueError(f"plant.source must be 'shipped' (use the zoo's organisms where they match) or 'fresh' "
                             f"(plant every organism on this machine), got {self.source!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"plant.storage_dtype must be one of {', '.join(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        for key in ("steps", "batch_size", "rank", "max_length"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"plant.{key} must be at least 1, got {getattr(self, key)}")
