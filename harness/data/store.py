"""Paired activation store: residual-stream activations streamed to safetensors shards.

One `ActivationStore` holds one model's activations at some layers on one text
set. It lives in a folder named by a key of (model identity incl. adapter hash,
layers, text set, dtype, max length), so the base model's activations are
collected once and reused by every pair it belongs to. Two stores over the same
text set form a `PairedActivations`; for a same-tokenizer pair the rows line up
token for token (same text id, position and token id, checked on load). Models
with different tokenizers are paired through a `RowAlignment` (harness/data/align.py):
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
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ...core.io import CorruptFileError, atomic_path, cache_lock, read_checked_json, safe_name, sha256_file, stable_hash, write_checked_json, write_json
from ...core.model import LoadedModel
from ...core.env import cache_dir
from ...core.activations import ActivationStore, CorruptStoreError, PairedActivations, RowAlignment, TextSet
from ...core.batching import right_pad
from ...core.capture import capture_residuals
from ...core.stream import collection_order

log = logging.getLogger(__name__)

STORE_VERSION = 1


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
    order = collection_order(lengths)  # the stream (core/stream.py) reads texts in this same order
    shards: list[list[int]] = [[]]
    tokens = 0
    for start in range(0, len(order), batch_size):
        if tokens >= shard_tokens:
            shards.append([])
            tokens = 0
        shards[-1].append(start)
        tokens += sum(lengths[i] for i in order[start : start + batch_size])
    return order, shards


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
    # the collection in the order it happens (key, resume check, shard plan, forward passes, atomic shards, manifest):
    # ~75 lines, kept whole so the resume logic and the manifest it writes are read together
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
                input_ids, mask = right_pad([ids[i] for i in batch], model.tokenizer.pad_token_id)
                hidden = capture_residuals(model, input_ids.to(model.device), mask.to(model.device), layer_idx)
                keep = mask.bool()
                for layer in layer_idx:
                    rows[f"acts_L{layer}"].append(hidden[layer].cpu()[keep])
                rows["text_idx"].append(torch.tensor(batch).unsqueeze(1).expand_as(input_ids)[keep])
                rows["pos"].append(torch.arange(input_ids.shape[1]).unsqueeze(0).expand_as(input_ids)[keep])
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
