"""Paired activation store: residual-stream activations streamed to safetensors shards.

One `ActivationStore` holds one model's activations at some layers on one text
set. It lives in a folder named by a key of (model identity incl. adapter hash,
layers, text set, dtype, max length), so the base model's activations are
collected once and reused by every pair it belongs to. Two stores over the same
text set form a `PairedActivations`; for a same-tokenizer pair the rows line up
token for token (same text id, position and token id, checked on load). Models
with different tokenizers are paired through a `RowAlignment` (harness/align.py):
only positions where both models have read the same text are paired, and the
share of each model's tokens that could be aligned is recorded.

Layout of a store folder:

    manifest.json        model, layers, text-set key, shard plan, completed shards + sha256
    shard-00000.safetensors   acts_L{layer} [n, d] per layer, text_idx, pos, token_id [n]

Shards are planned up front from the token lengths, written atomically and
recorded in the manifest one at a time, so an interrupted collection resumes at
the first missing shard. On open every recorded shard is checked (size and
sha256); a corrupt or missing one is dropped from the manifest and recomputed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .io import CorruptFileError, atomic_path, cache_lock, read_checked_json, read_json, safe_name, sha256_file, stable_hash, write_checked_json, write_json
from .models import LoadedModel, cache_dir

log = logging.getLogger(__name__)

STORE_VERSION = 1


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


class _StopForward(Exception):
    """Raised by the last needed hook: blocks above it and the LM head are never run."""


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
        """Concatenate all shards of one layer (for stores that fit in memory)."""
        parts = list(self.iter_shards(layer))
        acts = torch.cat([p.acts for p in parts])
        return LayerActs(
            acts.to(dtype) if dtype else acts,
            torch.cat([p.text_idx for p in parts]),
            torch.cat([p.pos for p in parts]),
            torch.cat([p.token_id for p in parts]),
        )


def store_key(model: LoadedModel, layers: Sequence[int], texts: TextSet, dtype: torch.dtype, max_length: int,
              batch_size: int) -> str:
    # batch_size is in the key because it changes the bytes: texts are batched by length, and a batch's padded
    # width changes the matmul shapes and so the float rounding of every activation
    return stable_hash(
        {"v": STORE_VERSION, "model": model.identity, "layers": list(layers), "texts": texts.key,
         "dtype": str(dtype), "max_length": max_length, "batch_size": batch_size}
    )


def _plan_shards(lengths: list[int], batch_size: int, shard_tokens: int) -> tuple[list[int], list[list[int]]]:
    """Length-sorted order of texts, and shards as lists of batch start offsets into that order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    shards: list[list[int]] = [[]]
    tokens = 0
    for start in range(0, len(order), batch_size):
        if tokens >= shard_tokens:
            shards.append([])
            tokens = 0
        shards[-1].append(start)
        tokens += sum(lengths[i] for i in order[start : start + batch_size])
    return order, shards


@torch.inference_mode()
def _forward_capture(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual stream after block L-1 (== output_hidden_states[L]) for each L, stopping after the deepest."""
    captured: dict[int, torch.Tensor] = {}
    blocks = model.decoder_layers()
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return hook

    for layer in set(layers):
        handles.append(blocks[layer - 1].register_forward_hook(make_hook(layer)))
    try:
        model.model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    empty = [i for i, x in enumerate(ids) if len(x) == 0]
    if empty:
        raise ValueError(f"{len(empty)} text(s) tokenize to nothing (first index {empty[0]}); remove empty texts")
    return ids


def collect(
    model: LoadedModel,
    texts: TextSet,
    layers: Sequence[int | float],
    *,
    batch_size: int = 16,
    max_length: int = 128,
    shard_tokens: int = 32_768,
    root: Path | None = None,
    progress: bool = True,
    _stop_after_shards: int | None = None,  # test hook: simulate an interruption
) -> ActivationStore:
    """Record `model`'s residual stream at `layers` for every token of `texts` (cached, resumable). Under a lock per store:
    concurrent jobs that need the same activations collect them once."""
    layer_idx = sorted({model.layer_index(layer) for layer in layers})
    key = store_key(model, layer_idx, texts, model.dtype, max_length, batch_size)
    root = Path(root or cache_dir() / "activations") / f"{safe_name(model.name)}-{texts.name}-{key}"
    with cache_lock(root):
        mpath = root / "manifest.json"

        store: ActivationStore | None = None
        if mpath.exists():
            try:
                store = ActivationStore.open(root)
            except CorruptStoreError as e:
                print(f"[diffbench] {e}; starting this store afresh", flush=True)
                store = None
            if store is not None and store.complete:
                return store

        ids = tokenize_texts(model.tokenizer, texts.texts, max_length)
        lengths = [len(x) for x in ids]
        order, plan = _plan_shards(lengths, batch_size, shard_tokens)
        if store is None or store.manifest.get("plan") != plan:
            store = ActivationStore(
                root,
                {
                    "version": STORE_VERSION, "model": model.name, "model_identity": model.identity,
                    "layers": layer_idx, "dtype": str(model.dtype).removeprefix("torch."),
                    "text_set": texts.name, "text_key": texts.key, "n_texts": len(texts),
                    "n_tokens": sum(lengths), "max_length": max_length, "batch_size": batch_size,
                    "hidden_size": model.hidden_size, "plan": plan, "done": {}, "complete": False,
                },
            )
            write_json(mpath, store.manifest)

        todo = [i for i in range(len(plan)) if str(i) not in store.manifest["done"]]
        pad = model.tokenizer.pad_token_id or 0
        bar = tqdm(total=sum(lengths[order[j]] for i in todo for s in plan[i] for j in range(s, min(s + batch_size, len(order)))),
                   desc=f"collect {model.name} [{texts.name}]", unit="tok", disable=not progress, leave=False)
        for n_written, shard_i in enumerate(todo):
            if _stop_after_shards is not None and n_written >= _stop_after_shards:
                bar.close()
                raise KeyboardInterrupt(f"simulated interruption after {n_written} shards")
            rows: dict[str, list[torch.Tensor]] = {f"acts_L{layer}": [] for layer in layer_idx}
            rows.update(text_idx=[], pos=[], token_id=[])
            for start in plan[shard_i]:
                batch = order[start : start + batch_size]
                width = max(lengths[i] for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    input_ids[r, : lengths[i]] = torch.tensor(ids[i])
                    mask[r, : lengths[i]] = 1
                hidden = _forward_capture(model, input_ids.to(model.device), mask.to(model.device), layer_idx)
                keep = mask.bool()
                for layer in layer_idx:
                    rows[f"acts_L{layer}"].append(hidden[layer].cpu()[keep])
                rows["text_idx"].append(torch.tensor(batch).unsqueeze(1).expand_as(input_ids)[keep])
                rows["pos"].append(torch.arange(width).unsqueeze(0).expand_as(input_ids)[keep])
                rows["token_id"].append(input_ids[keep])
                bar.update(int(keep.sum()))
            tensors = {k: torch.cat(v).contiguous() for k, v in rows.items()}
            fname = f"shard-{shard_i:05d}.safetensors"
            with atomic_path(root / fname) as tmp:
                save_file(tensors, str(tmp), metadata={"model": model.name, "identity": model.identity, "layers": ",".join(map(str, layer_idx))})
            path = root / fname
            store.manifest["done"][str(shard_i)] = {"file": fname, "size": path.stat().st_size, "sha256": sha256_file(path), "n": int(tensors["pos"].numel())}
            write_json(mpath, store.manifest)
        bar.close()
        store.manifest["complete"] = True
        write_json(mpath, store.manifest)
        return store


@dataclass
class RowAlignment:
    """Rows of two stores holding comparable positions (models with different tokenizers).

    Row k of the pair is row `rows_a[k]` of store A and row `rows_b[k]` of store B; `stats` holds
    the share of each model's tokens that could be aligned (see harness/align.py)."""

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


def align_stores(a: ActivationStore, b: ActivationStore, tok_a, tok_b, texts_a: TextSet, texts_b: TextSet, *,
                 spans_a: Sequence[Sequence[tuple[int, int]]] | None = None,
                 spans_b: Sequence[Sequence[tuple[int, int]]] | None = None,
                 max_window: int | None = None) -> RowAlignment:
    """Align two stores of models with different tokenizers (cached under the two stores' keys).

    `texts_x` are the texts each store was collected on (each model may see its own chat template
    around the shared content; `spans_x` locate that content, default: the whole text)."""
    from . import align as A

    max_window = A.MAX_WINDOW if max_window is None else int(max_window)
    for store, ts in ((a, texts_a), (b, texts_b)):
        if store.manifest.get("text_key") != ts.key:
            raise ValueError(f"store {store.root.name} was not collected on text set {ts.name!r}")
    if len(texts_a) != len(texts_b):
        raise ValueError(f"text sets of different sizes ({len(texts_a)} vs {len(texts_b)}) cannot be aligned")
    key = stable_hash({"v": A.ALIGN_VERSION, "a": a.root.name, "b": b.root.name, "w": max_window,
                       "sa": [list(map(list, x)) for x in spans_a] if spans_a is not None else None,
                       "sb": [list(map(list, x)) for x in spans_b] if spans_b is not None else None})
    path = cache_dir() / "alignments" / f"{key}.safetensors"
    if path.exists():
        try:
            rec = read_checked_json(path.with_suffix(".json"))
            if rec["rows_sha256"] != sha256_file(path):
                raise CorruptFileError("rows do not match their recorded checksum")
            t = load_file(str(path))
            return RowAlignment(t["rows_a"], t["rows_b"], rec["stats"])
        except Exception as e:  # corrupt or partial cache entry (either file): recompute both
            print(f"[diffbench] cached alignment {path.name}: {e!r}; recomputing it", flush=True)
    max_length = int(a.manifest["max_length"])
    if int(b.manifest["max_length"]) != max_length:
        raise ValueError("stores collected with different max_length cannot be aligned")
    als, ids_a, ids_b, stats = A.align_encodings(tok_a, tok_b, texts_a.texts, texts_b.texts, spans_a=spans_a, spans_b=spans_b,
                                                 max_length=max_length, max_window=max_window)
    rows = []
    for store, ids, side in ((a, ids_a, 0), (b, ids_b, 1)):
        text_idx, pos, token_id = store.index()
        width = max_length + 1
        lookup = torch.full((len(ids) * width,), -1, dtype=torch.long)
        lookup[text_idx * width + pos] = torch.arange(text_idx.numel())
        t_list, p_list = [], []
        for t, al in enumerate(als):
            for pair in al.pairs:
                t_list.append(t)
                p_list.append(pair[side])
        tt, pp = torch.tensor(t_list, dtype=torch.long), torch.tensor(p_list, dtype=torch.long)
        r = lookup[tt * width + pp] if tt.numel() else torch.zeros(0, dtype=torch.long)
        if (r < 0).any():
            raise ValueError(f"store {store.root.name} lacks aligned positions; was it collected with another tokenizer?")
        expect = torch.tensor([ids[t][p] for t, p in zip(t_list, p_list)], dtype=torch.long)
        if not torch.equal(token_id[r], expect):
            raise ValueError(f"store {store.root.name} holds other tokens than its tokenizer produces for these texts")
        rows.append(r)
    info = stats.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"rows_a": rows[0].contiguous(), "rows_b": rows[1].contiguous()}, str(tmp))
    # the rows' checksum is in the JSON, so an edit of either file is caught
    write_checked_json(path.with_suffix(".json"), {"stats": info, "rows_sha256": sha256_file(path)})
    return RowAlignment(rows[0], rows[1], info)


def pair_stores(a: ActivationStore, b: ActivationStore, tok_a, tok_b, texts_a: TextSet, texts_b: TextSet | None = None,
                **kw) -> PairedActivations:
    """A `PairedActivations` over two stores: the exact path when both models tokenize alike and
    see the same texts, the cross-tokenizer alignment otherwise."""
    from .align import same_tokenizer

    texts_b = texts_a if texts_b is None else texts_b
    if texts_a.key == texts_b.key and same_tokenizer(tok_a, tok_b):
        return PairedActivations(a, b, len(texts_a))
    return PairedActivations(a, b, len(texts_a), align_stores(a, b, tok_a, tok_b, texts_a, texts_b, **kw))


def collect_pair(model_a: LoadedModel, model_b: LoadedModel, texts: TextSet, layers: Sequence[int | float],
                 max_window: int | None = None, **kw) -> PairedActivations:
    """Collect both models on the same texts and pair them (aligned when the tokenizers differ).

    Layers are resolved per model, so relative depths (e.g. 0.5) suit models of different depth."""
    a = collect(model_a, texts, layers, **kw)
    b = collect(model_b, texts, layers, **kw)
    return pair_stores(a, b, model_a.tokenizer, model_b.tokenizer, texts, max_window=max_window)
