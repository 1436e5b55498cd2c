"""Paired activation rows computed on the fly, never written to disk: a row source and a shuffle buffer.

`PairStream` runs both models of a same-tokenizer pair over token sequences, batch by batch, and yields the rows the
collect stage (harness/data/store.py) would store for them: the same right padding, the forward stopped after the
deepest captured block, padded positions dropped, and (`drop_bos`) position 0 dropped as the crosscoders' data
preparation drops it. Given the sequences in collection order (`collection_order`) and the store's batch size, the
rows and their order are those of the store. `ShuffleBuffer` turns an endless iterator of row blocks into random
training batches while holding at most `buffer_rows` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .batching import right_pad
from .capture import capture_residuals
from .model import LoadedModel


@dataclass
class RowBlock:
    """Paired rows of one forward batch: activations (float32, on the models' device) and where each row came from."""

    acts_a: torch.Tensor  # [n, d_a]
    acts_b: torch.Tensor  # [n, d_b]
    text_idx: torch.Tensor  # [n] int64 (cpu)
    pos: torch.Tensor  # [n] int64 (cpu)


def collection_order(lengths: Sequence[int]) -> list[int]:
    """The order in which collection batches texts (longest first, ties by index; harness/data/store._plan_shards uses it):
    a stream over texts in this order, in the store's batch size, pads each batch as collection did, so its rows carry
    the store's float rounding too."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


class PairStream:
    """Both models' residual rows at (layer_a, layer_b) on `seqs`, taken `batch_size` sequences at a time in the given
    order; `text_ids[i]` is sequence i's text index in the rows (default i). Counts what it has read."""

    def __init__(self, model_a: LoadedModel, model_b: LoadedModel, seqs: Sequence[torch.Tensor], layer_a: int,
                 layer_b: int, batch_size: int, *, text_ids: Sequence[int] | None = None, drop_bos: bool = True):
        if not seqs:
            raise ValueError("a pair stream needs at least one token sequence")
        self.models = (model_a, model_b)
        self.layers = (layer_a, layer_b)
        self.seqs = list(seqs)
        self.text_ids = list(text_ids) if text_ids is not None else list(range(len(seqs)))
        self.batch_size = batch_size
        self.drop_bos = drop_bos
        self.max_len = max(len(s) for s in self.seqs)
        self.passes = 0  # passes over the sequences started
        self.rows = 0  # rows yielded
        self.bos_dropped = 0  # position-0 rows left out

    def one_pass(self) -> Iterator[RowBlock]:
        """One pass over the sequences, one block per forward batch."""
        self.passes += 1
        for start in range(0, len(self.seqs), self.batch_size):
            batch = self.seqs[start : start + self.batch_size]
            acts = []
            for model, layer in zip(self.models, self.layers):
                input_ids, mask = right_pad(batch, model.tokenizer.pad_token_id)  # each model its own pad id, as collection
                hidden = capture_residuals(model, input_ids.to(model.device), mask.to(model.device), [layer])[layer]
                keep = mask.bool()
                if self.drop_bos:
                    keep[:, 0] = False
                acts.append(hidden[keep.to(hidden.device)].float())
            self.bos_dropped += int(mask[:, 0].sum()) if self.drop_bos else 0
            ids = torch.tensor(self.text_ids[start : start + self.batch_size]).unsqueeze(1).expand_as(keep)
            pos = torch.arange(keep.shape[1]).unsqueeze(0).expand_as(keep)
            self.rows += acts[0].shape[0]
            yield RowBlock(acts[0], acts[1], ids[keep], pos[keep])

    def head(self, n_rows: int) -> RowBlock:
        """The first whole forward batches of a pass holding at least `n_rows` rows (all of one pass if it has fewer)."""
        blocks: list[RowBlock] = []
        for block in self.one_pass():
            blocks.append(block)
            if sum(b.pos.numel() for b in blocks) >= n_rows:
                break
        return RowBlock(*(torch.cat([getattr(b, f) for b in blocks]) for f in ("acts_a", "acts_b", "text_idx", "pos")))


class ShuffleBuffer:
    """Random training batches from an endless iterator of row blocks ([x_a, x_b], rows aligned), holding at most
    `buffer_rows` rows (preallocated on `device`) plus the unused tail of the last block read.

    Rule: the buffer is filled with the next `buffer_rows` rows of the source; a seeded permutation of them is served
    `batch_size` rows at a time; when fewer than a batch remain unserved, the buffer is refilled with the next rows
    and permuted afresh (the < batch_size rows left over are skipped, as the stored path skips an epoch's last
    partial batch). Every row of the source is served at most once. With a source that repeats one tensor's rows and
    `buffer_rows` equal to their number, the batches are exactly those of train.StoredBatches with the same seed."""

    def __init__(self, source: Iterator[Sequence[torch.Tensor]], buffer_rows: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu"):
        if buffer_rows < batch_size:
            raise ValueError(f"buffer_rows ({buffer_rows}) must hold at least one batch ({batch_size})")
        self.source = source
        self.capacity = buffer_rows
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.g = torch.Generator().manual_seed(seed)
        self.bufs: list[torch.Tensor] | None = None
        self.pending: list[torch.Tensor] = []  # the rows of the last block that did not fit
        self.n = 0  # rows in the buffer
        self.perm = torch.arange(0)
        self.cursor = 0
        self.rows_read = 0  # rows taken into the buffer
        self.fills = 0

    def _fill(self) -> None:
        self.n = 0
        while self.n < self.capacity:
            if not self.pending:
                self.pending = [x.to(self.device) for x in next(self.source)]
                continue
            if self.bufs is None:
                self.bufs = [torch.empty(self.capacity, x.shape[1], dtype=x.dtype, device=self.device) for x in self.pending]
            take = min(self.capacity - self.n, self.pending[0].shape[0])
            for buf, x in zip(self.bufs, self.pending):
                buf[self.n : self.n + take].copy_(x[:take])
            self.pending = [x[take:] for x in self.pending] if take < self.pending[0].shape[0] else []
            self.n += take
        self.rows_read += self.n
        self.fills += 1
        self.perm, self.cursor = torch.randperm(self.n, generator=self.g), 0

    def next(self) -> list[torch.Tensor]:
        if self.cursor + self.batch_size > self.n:
            self._fill()
        rows = self.perm[self.cursor : self.cursor + self.batch_size].to(self.device)
        self.cursor += self.batch_size
        return [buf.index_select(0, rows) for buf in self.bufs or []]
