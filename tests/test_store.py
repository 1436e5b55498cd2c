import pytest
import torch

from diffbench.harness.models import load_model
from diffbench.core.activations import ActivationStore, TextSet
from diffbench.harness.data.store import collect, collect_pair

TEXTS = [f"Sentence number {i}: " + "the quick brown fox jumps over the lazy dog. " * (1 + i % 4) for i in range(40)]


def test_store_matches_output_hidden_states(tiny_bf16, tmp_path):
    ts = TextSet.of("t", TEXTS)
    store = collect(tiny_bf16, ts, [1, 3], batch_size=8, shard_tokens=300, root=tmp_path, progress=False)
    assert len(store.shard_paths) > 1  # streamed in several shards
    for layer in (1, 3):
        la = store.load(layer)
        for i in (0, 7, 39):
            ids = torch.tensor([tiny_bf16.tokenizer(TEXTS[i], add_special_tokens=False).input_ids])
            with torch.inference_mode():
                ref = tiny_bf16.model(ids, output_hidden_states=True).hidden_states[layer][0].float()
            rows = la.text_idx == i
            assert torch.equal(la.pos[rows], torch.arange(ids.shape[1]))
            assert torch.equal(la.token_id[rows], ids[0])
            torch.testing.assert_close(la.acts[rows].float(), ref, atol=0.05, rtol=0.02)  # bf16, padded batch


def test_pair_alignment_same_tokenizer(tiny, tmp_path):
    other = load_model("tiny-llama-wide", dtype="fp32", device="cpu")
    pair = collect_pair(tiny, other, TextSet.of("t", TEXTS), [0.5], root=tmp_path, progress=False)
    la, lb = pair.load(2, 2)
    assert torch.equal(la.token_id, lb.token_id) and torch.equal(la.text_idx, lb.text_idx) and torch.equal(la.pos, lb.pos)
    assert la.acts.shape[1] == 64 and lb.acts.shape[1] == 96


def test_rerun_reads_cache(tiny, tmp_path):
    ts = TextSet.of("t", TEXTS)
    s1 = collect(tiny, ts, [2], root=tmp_path, progress=False)
    mtimes = [p.stat().st_mtime_ns for p in s1.shard_paths]
    s2 = collect(tiny, ts, [2], root=tmp_path, progress=False)
    assert s2.root == s1.root and [p.stat().st_mtime_ns for p in s2.shard_paths] == mtimes
    # a different text set or layer is a different store
    assert collect(tiny, TextSet.of("t", TEXTS[:-1]), [2], root=tmp_path, progress=False).root != s1.root


def test_corrupt_shard_is_recomputed(tiny, tmp_path):
    ts = TextSet.of("t", TEXTS)
    store = collect(tiny, ts, [2], shard_tokens=300, root=tmp_path, progress=False)
    ref = store.load(2).acts.clone()
    victim = store.shard_paths[1]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF  # flip a byte inside the tensor data: same size, wrong checksum
    victim.write_bytes(bytes(data))
    reopened = ActivationStore.open(store.root)
    assert not reopened.complete
    with pytest.raises(Exception, match="incomplete"):
        reopened.load(2)
    again = collect(tiny, ts, [2], shard_tokens=300, root=tmp_path, progress=False)
    assert torch.equal(again.load(2).acts, ref)
    # a truncated (partial) shard is caught by its size
    again.shard_paths[0].write_bytes(again.shard_paths[0].read_bytes()[:50])
    assert torch.equal(collect(tiny, ts, [2], shard_tokens=300, root=tmp_path, progress=False).load(2).acts, ref)


def test_interrupted_collection_resumes(tiny, tmp_path):
    ts = TextSet.of("t", TEXTS)
    with pytest.raises(KeyboardInterrupt):
        collect(tiny, ts, [2], shard_tokens=300, root=tmp_path, progress=False, _stop_after_shards=2)
    partial = ActivationStore.open(next(p for p in tmp_path.iterdir() if not p.name.startswith(".")))  # (.locks: the cache locks)
    assert len(partial.manifest["done"]) == 2 and not partial.complete
    written = {p: p.stat().st_mtime_ns for p in (partial.root / r["file"] for r in partial.manifest["done"].values())}
    store = collect(tiny, ts, [2], shard_tokens=300, root=tmp_path, progress=False)
    assert store.complete
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())  # finished shards were not redone
    fresh = collect(tiny, ts, [2], shard_tokens=300, root=tmp_path / "fresh", progress=False)
    assert torch.equal(store.load(2).acts, fresh.load(2).acts)


def test_empty_text_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(ValueError, match="tokenize to nothing"):
        collect(tiny, TextSet.of("t", ["hello", ""]), [2], root=tmp_path, progress=False)
