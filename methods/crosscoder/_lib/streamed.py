"""Crosscoder data read from a stream (`data: stream`): both models run over a text source during training, no
activations stored.

Text source: the audit corpus's own token ids by default (read from model A's store index, no activations; in
collection order, so a stream over them yields the store's rows in the store's order), or `stream_texts`, a UTF-8 file
of one text per line (tokenized by model A as collection tokenizes, visited in a fixed shuffled order). The file is
whatever the user supplies offline; `scripts/export_stream_texts.py` writes the project's own texts (everyday chat
and neutral prompts, tasks/everyday.py and tasks/neutral.py, this project's licence) to one.

Calibration rule: the stream's first whole forward batches holding at least 1.3 x `max_tokens` rows (the rows the
stored path reads; all of one pass over a smaller text source) form the calibration block. `split_rows` runs on it
exactly as on stored rows: it fixes the outlier norm bounds, the per-model scales and the held-out evaluation texts,
and its training rows are `PairData.train` (data initialisation, the threshold-calibration rows of
`split_calibration`, training statistics, Latent Scaling). The gradient steps then draw from the stream restarted at
its first text, pass after pass: rows over the outlier bounds, rows of held-out texts and the threshold-calibration
rows are skipped; the rest are scaled and fed through a `ShuffleBuffer` of `buffer_rows` rows.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import torch

from ....core import NotApplicableError, PairContext
from ....core.stream import PairStream, ShuffleBuffer
from .method import SPLIT_SEED, DataOptions, PairData, RowRules, resolve_layers, split_rows
from .train import TrainConfig, split_calibration


def corpus_sequences(ctx: PairContext) -> tuple[list[torch.Tensor], list[int]]:
    """(token ids per text, text indices) of the audit corpus in its store's row order (collection order), from model
    A's store index: no activations are read."""
    text_idx, _pos, token_id = ctx.corpus.a.index()
    ids, counts = torch.unique_consecutive(text_idx, return_counts=True)
    return list(token_id.split(counts.tolist())), ids.tolist()


def file_sequences(path: str, tokenizer, max_length: int) -> tuple[list[torch.Tensor], list[int]]:
    """(token ids per text, line indices) of a UTF-8 file's non-blank lines, tokenized as collection does (no special
    tokens, truncated to `max_length`), in a fixed shuffled order: its calibration block and buffer fills mix the
    file rather than read it front to back."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"stream_texts file {path} holds no text")
    ids = tokenizer(lines, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    order = [i for i in range(len(lines)) if ids[i]]
    random.Random(SPLIT_SEED).shuffle(order)
    return [torch.tensor(ids[i]) for i in order], order


def _keys(rows: tuple[torch.Tensor, torch.Tensor], stride: int) -> torch.Tensor:
    return rows[0] * stride + rows[1]


def training_rows(stream: PairStream, rules: RowRules, scales: list[float], skip: torch.Tensor,
                  stride: int) -> Iterator[list[torch.Tensor]]:
    """Scaled training rows [x_a, x_b] of the stream, pass after pass: outliers by the fixed bounds and the rows
    whose (text, position) key is in `skip` left out."""
    while True:
        n = 0
        for block in stream.one_pass():
            keep = ~torch.isin(block.text_idx * stride + block.pos, skip)
            acts = (block.acts_a, block.acts_b)
            for x, bound in zip(acts, rules.max_norms):
                if bound is not None:
                    keep &= ~(x.norm(dim=1) > bound).cpu()
            n += int(keep.sum())
            yield [x[keep.to(x.device)] * c for x, c in zip(acts, scales)]
        if n == 0:
            raise NotApplicableError("a whole pass over the stream's texts left no training rows")


def stream_data(ctx: PairContext, opts: DataOptions, stream_texts: str | None, buffer_rows: int,
                tc: TrainConfig) -> tuple[PairData, ShuffleBuffer, PairStream]:
    """The calibration block's `PairData` and the shuffle buffer the gradient steps draw from (module docstring)."""
    if getattr(ctx.corpus, "aligned", False):
        raise NotApplicableError("data=stream needs two models with one tokenizer (the stream pairs rows token by token)")
    layer_a, layer_b = resolve_layers(ctx, opts)
    store = ctx.corpus.a
    if stream_texts is None:
        seqs, text_ids = corpus_sequences(ctx)
    else:
        seqs, text_ids = file_sequences(stream_texts, ctx.model_a.tokenizer, int(store.manifest.get("max_length", 128)))
    stream = PairStream(ctx.model_a, ctx.model_b, seqs, layer_a, layer_b, int(store.manifest.get("batch_size", 16)),
                        text_ids=text_ids, drop_bos=opts.drop_bos)
    calib = stream.head(int(opts.max_tokens * 1.3))
    data, rules = split_rows(calib.acts_a.cpu(), calib.acts_b.cpu(), calib.text_idx, calib.pos, opts, ctx, layer_a, layer_b)
    data.n_dropped_pos0 = stream.bos_dropped  # the stream left them out of the calibration block already
    _, threshold_rows = split_calibration(data.train[0].shape[0], tc)
    stride = stream.max_len + 1
    skip = torch.cat([_keys(rules.eval_rows, stride),
                      _keys((rules.train_rows[0][threshold_rows], rules.train_rows[1][threshold_rows]), stride)])
    rows = training_rows(stream, rules, data.scales, skip, stride)
    return data, ShuffleBuffer(rows, buffer_rows, tc.batch_size, tc.seed + 1, ctx.device), stream
