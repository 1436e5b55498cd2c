"""Batched reads of many findings (core.findings.read_many) and the crosscoder's sparse inference decode equal
their one-at-a-time / dense forms up to float summation order."""

import torch

from diffbench.core.findings import Readout, read_many
from diffbench.methods.crosscoder._lib.module import Crosscoder


def test_read_many_equals_each_readout():
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(3000, 48, generator=g), torch.randn(3000, 48, generator=g) * 3
    w = lambda: torch.randn(48, generator=g)
    readouts = [
        Readout(2, 2, "linear", w_a=w(), w_b=w(), bias=0.3, act="relu", threshold=1.0),
        Readout(2, 2, "linear", w_b=w(), input_norm="rms"),
        Readout(2, 2, "diff_norm"),
        Readout(2, 2, "linear", w_a=w(), act="abs"),
        Readout(2, 2, "linear", w_a=-w(), w_b=w(), input_norm="rms", act="relu", threshold=0.5),
    ]
    got = read_many(readouts, xa, xb)
    assert got.shape == (3000, len(readouts))
    for j, r in enumerate(readouts):
        want = r(xa, xb)
        assert torch.allclose(got[:, j], want, atol=1e-4, rtol=1e-5), j


def test_sparse_decode_equals_dense_and_dense_codes_stay_dense():
    cc = Crosscoder([32, 32], 256, 0, 0, seed=0)
    g = torch.Generator().manual_seed(1)
    sparse = torch.relu(torch.randn(64, 256, generator=g)) * (torch.rand(64, 256, generator=g) < 0.03)
    for f in (sparse, torch.relu(torch.randn(64, 256, generator=g))):  # 3% and ~50% active
        for got, want in zip(cc.decode_code(f), cc.decode(f)):
            assert torch.allclose(got, want, atol=1e-5)
