"""The `collect` config group's one home of its defaults (registered by harness/config_defaults.py): which residual-
stream activations are stored, and how. Free of torch, so composing a config does not load it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CollectConfig:
    """Which residual-stream activations are stored and how: the `collect:` options of a benchmark run and of
    `diffbench diff` (the only home of their defaults; conf/ holds overrides)."""

    layers: list[int | float] = field(default_factory=lambda: [0.5])  # int index or relative depth
    batch_size: int = 16
    max_length: int = 128  # tokens per text
    shard_tokens: int = 32768  # rows per stored shard
    align_max_window: int | None = 8  # cross-tokenizer pairs: longest window (tokens per side) that is still paired

    @classmethod
    def from_dict(cls, d: dict | None) -> "CollectConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown collect option(s) {sorted(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)
