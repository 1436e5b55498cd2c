"""Streaming crosscoder training (`data: stream`): the row stream, the shuffle buffer, streamed vs stored training."""

from __future__ import annotations

import pytest
import torch

from diffbench.core import METHODS, validate_findings
from diffbench.core.stream import PairStream, ShuffleBuffer
from diffbench.methods.crosscoder._lib.method import DataOptions, prepare_data
from diffbench.methods.crosscoder._lib.streamed import corpus_sequences
from diffbench.methods.crosscoder._lib.train import StoredBatches, split_calibration
from sentences import SENTENCES  # tests/sentences.py
from tiny_pairs import perturbed_pair

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(dict_size=64, steps=40, batch_size=64, max_tokens=2000, max_findings=10, eval_frac=0.25, k=8)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("xcs")
    mp.setenv("DIFFBENCH_CACHE", str(root / "cache"))
    try:
        yield perturbed_pair(root, SENTENCES)
    finally:
        mp.undo()


def _stream(ctx, drop_bos: bool) -> PairStream:
    seqs, ids = corpus_sequences(ctx)
    return PairStream(ctx.model_a, ctx.model_b, seqs, 2, 2, ctx.corpus.a.manifest["batch_size"], text_ids=ids,
                      drop_bos=drop_bos)


@pytest.mark.parametrize("drop_bos", [False, True])
def test_stream_yields_the_rows_collection_stores(tiny_pair, drop_bos):
    """Same texts, layer and batch size: the stream's rows are the store's (written by harness/data/store.collect),
    in the store's order, with position 0 left out when asked."""
    la, lb = tiny_pair.corpus.load(2)
    blocks = list(_stream(tiny_pair, drop_bos).one_pass())
    assert len(blocks) > 1  # several forward batches
    got = [torch.cat([getattr(b, f) for b in blocks]) for f in ("acts_a", "acts_b", "text_idx", "pos")]
    keep = la.pos > 0 if drop_bos else torch.ones_like(la.pos, dtype=torch.bool)
    assert torch.equal(got[2], la.text_idx[keep]) and torch.equal(got[3], la.pos[keep])
    # same batches, same padding, same thread count: the same floats (allclose would also pass on another BLAS split)
    torch.testing.assert_close(got[0], la.acts[keep].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], lb.acts[keep].float(), rtol=0, atol=1e-6)
    assert not torch.equal(got[0], got[1])  # model B is perturbed


def test_buffer_never_holds_more_than_buffer_rows_and_serves_each_row_once():
    sizes = iter([37, 5, 80, 0, 23] * 40)

    def source():
        start = 0
        for n in sizes:
            rows = torch.arange(start, start + n, dtype=torch.float32)[:, None]
            start += n
            yield [rows, -rows]

    buf = ShuffleBuffer(source(), buffer_rows=100, batch_size=16, seed=0)
    served = []
    for _ in range(30):
        xa, xb = buf.next()
        assert xa.shape == (16, 1) and torch.equal(xb, -xa)
        assert all(b.shape[0] == 100 for b in buf.bufs) and buf.n <= 100
        assert all(p.shape[0] <= 80 for p in buf.pending)  # at most the tail of one block waits outside
        served.append(xa.flatten())
    served = torch.cat(served)
    assert served.unique().numel() == served.numel()  # no row twice
    assert not torch.equal(served[:16], torch.arange(16.0))  # shuffled
    with pytest.raises(ValueError, match="at least one batch"):
        ShuffleBuffer(source(), buffer_rows=8, batch_size=16, seed=0)


def test_buffer_over_a_repeated_tensor_draws_the_stored_batches():
    x = [torch.randn(50, 3), torch.randn(50, 2)]
    stored = StoredBatches(x, torch.arange(50), 16, seed=4)

    def repeat():
        while True:
            yield x[0][:30], x[1][:30]  # one pass in two blocks
            yield x[0][30:], x[1][30:]

    streamed = ShuffleBuffer(repeat(), buffer_rows=50, batch_size=16, seed=4)
    for _ in range(10):  # three epochs and more
        assert all(torch.equal(a, b) for a, b in zip(stored.next(), streamed.next()))


@pytest.mark.parametrize("name", ["batchtopk_crosscoder", "l1_crosscoder"])
def test_streaming_equals_stored(tiny_pair, name):
    """A corpus smaller than the calibration block: the stream's calibration rows are the stored path's rows; with a
    buffer of exactly the training rows it serves the stored path's batches, epoch after epoch, so the dictionary is
    the same to the bit."""
    params = {**SMALL} if name == "batchtopk_crosscoder" else {k: v for k, v in SMALL.items() if k != "k"}
    stored = METHODS.get(name)(**params)
    data = prepare_data(tiny_pair, DataOptions.of(stored.cfg))
    n = data.train[0].shape[0]
    assert n < stored.cfg.max_tokens  # no subsample: every usable row trains
    n_train = split_calibration(n, stored.train_config(tiny_pair, "torch"))[0].numel()
    assert stored.cfg.steps * stored.cfg.batch_size > 2 * n_train  # several epochs, so several buffer fills
    stored.find(tiny_pair)
    streamed = METHODS.get(name)(**params, data="stream", buffer_rows=n_train)
    streamed.find(tiny_pair)
    assert streamed.last_metrics["stream_buffer_fills"] > 2 and streamed.last_metrics["stream_passes"] > 2
    a, b = stored.crosscoder.state_dict(), streamed.crosscoder.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=0, equal_nan=True), k  # bit-identical (L1's threshold is NaN)
    assert stored.data.scales == streamed.data.scales
    assert stored.last_metrics["dropped_pos0"] == streamed.last_metrics["dropped_pos0"] > 0
    assert stored.last_metrics["ev_a"] == streamed.last_metrics["ev_a"]


def test_stream_method_end_to_end(tiny_pair, tmp_path):
    """data=stream with a small buffer, more tokens than the corpus holds, and a text file as the source."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES[::-1] + ["", "  "]), encoding="utf-8")
    for extra in ({}, {"stream_texts": str(texts)}):
        method = METHODS.get("batchtopk_crosscoder")(**SMALL, data="stream", buffer_rows=256, stream_tokens=5000, **extra)
        assert method.train_steps() == 5000 // 64 and method.config["data"] == "stream"
        findings = method.find(tiny_pair)
        validate_findings(findings, tiny_pair)
        assert findings and len(findings) <= SMALL["max_findings"]
        m = method.last_metrics
        assert m["steps"] == 78 and m["tokens_seen"] == 78 * 64
        assert m["stream_passes"] >= 2 and m["stream_buffer_fills"] >= 2
        assert 0.0 < m["ev_a"] <= 1.0 and 0.0 < m["ev_b"] <= 1.0


def test_stored_config_hash_has_no_stream_options():
    """The default (stored) config is the one from before the stream options, so its hash, and the packaged flag
    calibrations made under it, stay; a stream config is another config."""
    stored = METHODS.get("batchtopk_crosscoder")()
    assert not {"data", "stream_tokens", "buffer_rows", "stream_texts"} & set(stored.config)
    assert METHODS.get("batchtopk_crosscoder")(data="stream").config_hash != stored.config_hash
    with pytest.raises(ValueError, match="buffer_rows"):
        METHODS.get("batchtopk_crosscoder")(data="stream", buffer_rows=8)
