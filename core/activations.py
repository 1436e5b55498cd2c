"""Activations as methods and scoring read them: text sets, one layer's rows, a store on disk, a pair of stores.

`harness/data/store.py` writes stores (collection); this module only reads them, so methods depend on it and not on
the harness. Layout of a store folder:

    manifest.json        model, layers, text-set key, shard plan, completed shards + sha256
    shard-00000.safetensors   acts_L{layer} [n, d] per layer, text_idx, pos, token_id [n]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors.torch import load_file

from .io import read_json, sha256_file, stable_hash, write_json

log = logging.getLogger(__name__)


class CorruptStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class TextSet:
    """A named list of texts; `key` is a content hash, so edited texts get a new cache entry."""

    name: str
    texts: tuple[str, ...]

    @classmethod
    def of(cls, name: str, texts: Sequence[str]) -> "TextSet":
        if not texts:
            raise ValueError(f"text set {name!r} is empty")
        return cls(name, tuple(texts))

    @property
    def key(self) -> str:
        return stable_hash(list(self.texts))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LayerActs:
    """All rows of one layer of a store: activations plus where each row came from."""

    acts: torch.Tensor  # [n_tokens, d]
    text_idx: torch.Tensor  # [n_tokens] int64, index into the text set
    pos: torch.Tensor  # [n_tokens] int64, token position within its text
    token_id: torch.Tensor  # [n_tokens] int64

    def per_text_max(self, scores: torch.Tensor, n_texts: int) -> torch.Tensor:
        """Max of a per-row score over each text's tokens -> [n_texts]."""
        out = torch.full((n_texts,), float("-inf"), dtype=torch.float32)
        return out.scatter_reduce(0, self.text_idx, scores.float(), reduce="amax", include_self=True)


@dataclass
class ActivationStore:
    root: Path
    manifest: dict = field(default_factory=dict)

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> "ActivationStore":
        root = Path(root)
        mpath = root / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"no activation store at {root}")
        try:
            manifest = read_json(mpath)
        except ValueError as e:
            raise CorruptStoreError(f"{mpath} is not valid JSON ({e}); delete the folder to recollect") from e
        store = cls(root, manifest)
        store.verify()
        return store

    def verify(self) -> list[int]:
        """Drop shards whose file is missing or whose size/sha256 differ; return their indices."""
        bad = []
        for idx, rec in list(self.manifest.get("done", {}).items()):
            path = self.root / rec["file"]
            ok = path.exists() and path.stat().st_size == rec["size"] and sha256_file(path) == rec["sha256"]
            if not ok:
                bad.append(int(idx))
                del self.manifest["done"][idx]
        if bad:
            log.warning("activation store %s: shards %s missing or corrupt; they will be recomputed", self.root, bad)
            print(f"[diffbench] {self.root.name}: shard(s) {bad} corrupt or missing -> recomputing", flush=True)
            self.manifest["complete"] = False
            write_json(self.root / "manifest.json", self.manifest)
        return bad

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete")) and len(self.manifest["done"]) == len(self.manifest["plan"])

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def n_texts(self) -> int:
        return int(self.manifest["n_texts"])

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / self.manifest["done"][str(i)]["file"] for i in range(len(self.manifest["plan"]))]

    # -- reading -----------------------------------------------------------------
    def iter_shards(self, layer: int) -> Iterator[LayerActs]:
        if not self.complete:
            raise CorruptStoreError(f"activation store {self.root} is incomplete; rerun collection to finish it")
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not in store {self.root} (has {self.layers})")
        for path in self.shard_paths:
            t = load_file(str(path))
            yield LayerActs(t[f"acts_L{layer}"], t["text_idx"].long(), t["pos"].long(), t["token_id"].long())

    def index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text_idx, pos, token_id) of every row, in row order, without reading the activations."""
        from safetensors import safe_open

        if not self.complete:
            raise CorruptStoreError(f"activation store {self.root} is incomplete; rerun collection to finish it")
        parts: dict[str, list[torch.Tensor]] = {"text_idx": [], "pos": [], "token_id": []}
        for path in self.shard_paths:
            with safe_open(str(path), framework="pt") as f:
                for k in parts:
                    parts[k].append(f.get_tensor(k).long())
        return torch.cat(parts["text_idx"]), torch.cat(parts["pos"]), torch.cat(parts["token_id"])

    def load(self, layer: int, dtype: torch.dtype | None = None) -> LayerActs:
        """Concatenate all shards of one layer (for stores that fit in memory). The two most recent loads are kept:
        in the diff stage one pair's methods, their seeds and the findings' snippets read the same two stores (a
        floor run read them twice, ~0.4 s each here). Callers must not write to the returned tensors (none does)."""
        shards = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in self.shard_paths) if self.complete else ()
        key = (str(self.root), layer, str(dtype), shards)
        if key in _LOADED:
            _LOADED[key] = _LOADED.pop(key)  # most recent last
            return _LOADED[key]
        parts = list(self.iter_shards(layer))
        acts = torch.cat([p.acts for p in parts])
        out = LayerActs(
            acts.to(dtype) if dtype else acts,
            torch.cat([p.text_idx for p in parts]),
            torch.cat([p.pos for p in parts]),
            torch.cat([p.token_id for p in parts]),
        )
        while len(_LOADED) >= 2:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = out
        return out


_LOADED: dict[tuple, "LayerActs"] = {}  # ActivationStore.load's two most recent results


@dataclass
class RowAlignment:
    """Rows of two stores holding comparable positions (models with different tokenizers).

    Row k of the pair is row `rows_a[k]` of store A and row `rows_b[k]` of store B; `stats` holds
    the share of each model's tokens that could be aligned (see harness/data/align.py)."""

    rows_a: torch.Tensor  # [n_pairs] int64, row index into store A (row order of `ActivationStore.load`)
    rows_b: torch.Tensor
    stats: dict

    def __len__(self) -> int:
        return int(self.rows_a.numel())


def _take(la: LayerActs, rows: torch.Tensor) -> LayerActs:
    return LayerActs(la.acts[rows], la.text_idx[rows], la.pos[rows], la.token_id[rows])


@dataclass
class PairedActivations:
    """Two models' activations on one text set, row-aligned: identical tokens for a same-tokenizer
    pair, aligned positions (`alignment`) for models with different tokenizers."""

    a: ActivationStore
    b: ActivationStore
    n_texts: int
    alignment: RowAlignment | None = None

    @property
    def aligned(self) -> bool:
        return self.alignment is not None

    def load(self, layer_a: int, layer_b: int | None = None, dtype: torch.dtype = torch.float32) -> tuple[LayerActs, LayerActs]:
        la = self.a.load(layer_a, dtype)
        lb = self.b.load(layer_b if layer_b is not None else layer_a, dtype)
        if self.alignment is not None:
            return _take(la, self.alignment.rows_a), _take(lb, self.alignment.rows_b)
        if not (torch.equal(la.token_id, lb.token_id) and torch.equal(la.text_idx, lb.text_idx) and torch.equal(la.pos, lb.pos)):
            raise ValueError(
                f"stores {self.a.root.name} and {self.b.root.name} are not token-aligned; models with "
                "different tokenizers need the cross-tokenizer alignment"
            )
        return la, lb
