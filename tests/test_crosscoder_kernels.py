"""Triton kernels of the crosscoder vs the plain-torch reference: forward values and gradients.

Without CUDA it runs the kernels under the Triton interpreter (TRITON_INTERPRET=1) on CPU, so CI
needs no GPU; on a CUDA machine it runs them compiled on the GPU (TRITON_INTERPRET=0 is the default
there), plus the GPU-only tests at realistic sizes below. Triton picks the interpreter when a kernel
is decorated, so the variable must be set before triton is first imported; if some earlier test
module already imported it without the interpreter (and there is no GPU), this file reruns itself
in a fresh process. (Seen on the H100 machine: triton 3.6's interpreter with numpy 2.5 fails on
these kernels, "only 0-dimensional arrays can be converted to Python scalars"; triton 3.9's works.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest  # noqa: E402
import torch  # noqa: E402  (does not import triton)

# before triton's first import: compiled on a CUDA machine, interpreted on CPU otherwise
# (TRITON_INTERPRET=1 forces the interpreter on a GPU machine too)
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")

triton = pytest.importorskip("triton")
import triton.language.standard as _tls  # noqa: E402

INTERPRETED = type(_tls.zeros_like).__name__ == "InterpretedFunction"
ON_GPU = torch.cuda.is_available() and not INTERPRETED
RUNNABLE = INTERPRETED or ON_GPU
DEV = "cuda" if ON_GPU else "cpu"



@pytest.fixture(autouse=True)
def _need_kernels(request):
    if not RUNNABLE and request.node.name != "test_kernels_in_fresh_process":
        pytest.skip("triton was imported without the interpreter; test_kernels_in_fresh_process covers these")


if not RUNNABLE:

    def test_kernels_in_fresh_process():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                           env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


from diffbench.methods.crosscoder._lib import reference as R  # noqa: E402

if RUNNABLE:
    from diffbench.methods.crosscoder._lib import kernels as K  # noqa: E402

# latents: A owns [0, 48), B owns [16, 64)  (DFC: 16 A-exclusive, 32 shared, 16 B-exclusive)
DFC = [(0, 48), (16, 64)]
FULL = [(0, 64), (0, 64)]
WIDTHS = (24, 40)


def _weights(ranges, widths=WIDTHS, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(hi - lo, d, generator=g).to(DEV).requires_grad_(grad) for (lo, hi), d in zip(ranges, widths)]
    return ws


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape
    err = (a.float() - b.float()).abs().max().item()
    scale = max(1.0, b.float().abs().max().item())
    assert err <= tol * scale, f"max abs err {err} (scale {scale})"


@pytest.mark.parametrize("ranges", [DFC, FULL], ids=["dfc", "plain"])
def test_sparse_decode_padded_matches_reference(ranges):
    torch.manual_seed(1)
    bsz, k = 6, 9
    ws = _weights(ranges)
    bs = [torch.randn(d, device=DEV, requires_grad=True) for d in WIDTHS]
    idx = torch.randint(-1, 64, (bsz, k), device=DEV)  # includes padding (-1) and other-model latents
    vals = torch.rand(bsz, k, device=DEV, requires_grad=True)
    out_k = K.sparse_decode_padded(idx, vals, ws, ranges, bs)
    out_r = R.sparse_decode_padded(idx, vals, ws, ranges, bs)
    for a, b in zip(out_k, out_r):
        _close(a, b)
    grads_out = [torch.randn_like(o) for o in out_r]
    gk = torch.autograd.grad(out_k, [vals, *ws, *bs], grads_out)
    gr = torch.autograd.grad(out_r, [vals, *ws, *bs], grads_out)
    for a, b in zip(gk, gr):
        assert b.abs().max() > 0  # a real comparison, not zeros against zeros
        _close(a, b)


def test_sparse_decode_csr_variable_rows_and_no_bias():
    torch.manual_seed(2)
    bsz, n = 7, 64
    s = torch.rand(bsz, n, device=DEV) * (torch.rand(bsz, n, device=DEV) < 0.3)
    s[3] = 0  # an empty row
    code = R.batch_topk(s, 20)
    assert code.nnz == 20 and code.width() > 20 / bsz
    ws = _weights(DFC, seed=3)
    vals = torch.rand(code.nnz, device=DEV, requires_grad=True)
    out_k = K.sparse_decode(code, vals, ws, DFC)
    out_r = R.sparse_decode(code, vals, ws, DFC)
    for a, b in zip(out_k, out_r):
        _close(a, b)
    assert torch.all(out_k[0][3] == 0) and torch.all(out_k[1][3] == 0)
    go = [torch.randn_like(o) for o in out_r]
    for a, b in zip(torch.autograd.grad(out_k, [vals, *ws], go), torch.autograd.grad(out_r, [vals, *ws], go)):
        _close(a, b)


def test_sparse_decode_skips_other_models_block():
    """An A-exclusive latent's value never reaches model B's output, and B's decoder gets no grad for it."""
    ws = _weights(DFC, seed=4)
    idx = torch.tensor([[3, 20, -1], [60, 5, 30]], device=DEV)  # 3, 5: A-exclusive; 60: B-exclusive
    vals = torch.tensor([[1.0, 2.0, 9.0], [0.5, 1.5, 1.0]], device=DEV, requires_grad=True)
    xa, xb = K.sparse_decode_padded(idx, vals, ws, DFC)
    bumped = vals.detach().clone()
    bumped[0, 0] += 10.0
    bumped[1, 1] += 10.0
    xa2, xb2 = K.sparse_decode_padded(idx, bumped, ws, DFC)
    assert torch.equal(xb, xb2)  # model B does not see A-exclusive latents at all
    assert not torch.equal(xa, xa2)
    (g,) = torch.autograd.grad(xb.sum(), [vals])
    assert g[0, 0] == 0 and g[1, 1] == 0 and g[0, 2] == 0  # A-exclusive and padding entries


def test_decoder_norms_match_reference():
    ws = _weights(DFC, seed=5, grad=False)
    _close(K.decoder_norms(ws, DFC, 64), R.decoder_norms(ws, DFC, 64))


@pytest.mark.parametrize("ranges,widths", [(DFC, WIDTHS), (FULL, (32, 32))], ids=["dfc", "plain"])
def test_fused_encoder_matches_reference(ranges, widths):
    torch.manual_seed(6)
    bsz = 20  # not a multiple of the 16-row tile
    xs = [torch.randn(bsz, d, device=DEV) for d in widths]
    encs = _weights(ranges, widths, seed=7, grad=False)
    decs = _weights(ranges, widths, seed=8, grad=False)
    b_enc = torch.randn(64, device=DEV)
    dn = R.decoder_norms(decs, ranges, 64)
    s_k = K.encode_scores(xs, encs, b_enc, dn, ranges, block_m=16, block_n=16, block_k=16)
    s_r = R.scaled_relu(R.preacts(xs, encs, b_enc, ranges), dn)
    _close(s_k, s_r, tol=2e-3 if ON_GPU else 1e-4)  # tf32 on GPU
    assert (s_r > 0).float().mean() > 0.2


def test_sparse_encode_values_and_grads_match_reference():
    torch.manual_seed(9)
    bsz = 12
    xs = [torch.randn(bsz, d, device=DEV) for d in WIDTHS]
    encs = _weights(DFC, seed=10)
    decs = _weights(DFC, seed=11, grad=False)
    b_enc = torch.randn(64, device=DEV, requires_grad=True)
    dn = R.decoder_norms(decs, DFC, 64)
    s = R.scaled_relu(R.preacts(xs, [w.detach() for w in encs], b_enc.detach(), DFC), dn)
    code = R.batch_topk(s, 5 * bsz)
    v_k = K.sparse_encode_values(s, dn, code, xs, encs, b_enc, DFC)
    v_r = R.sparse_encode_values(xs, encs, b_enc, code, DFC)
    _close(v_k, v_r)
    g = torch.randn_like(v_r)
    gk = torch.autograd.grad(v_k, [*encs, b_enc], g)
    gr = torch.autograd.grad(v_r, [*encs, b_enc], g)
    for a, b in zip(gk, gr):
        assert b.abs().max() > 0
        _close(a, b)


@pytest.mark.parametrize("sparsity", ["batchtopk", "l1"])
def test_training_step_triton_matches_torch(sparsity, monkeypatch):
    """One full loss + backward (main and auxiliary losses) on both backends gives the same grads."""
    from diffbench.methods.crosscoder._lib.module import Crosscoder, Ops
    from diffbench.methods.crosscoder._lib.train import TrainConfig
    from diffbench.methods.crosscoder._lib.losses import _batchtopk_loss, _l1_loss

    # exact fp32 in the fused encoder: with tf32 (the CUDA default) a near-tied score can swap
    # one kept latent and the two backends' gradients then differ by more than rounding
    monkeypatch.setattr(K, "ENCODER_PRECISION", "ieee")

    torch.manual_seed(12)
    xs = [torch.randn(24, d, device=DEV) for d in WIDTHS]
    grads = {}
    for backend in ("torch", "triton"):
        cc = Crosscoder(WIDTHS, n_shared=32, n_excl_a=16, n_excl_b=16, seed=0).to(DEV)
        cfg = TrainConfig(sparsity=sparsity, k=4, aux_k=4, steps=10, backend=backend, sparse_decode_frac=1.0)
        ops = Ops(backend, bf16=False)
        dead = torch.zeros(cc.n, dtype=torch.bool, device=DEV)
        dead[::3] = True
        if sparsity == "batchtopk":
            loss, _ = _batchtopk_loss(cc, xs, cfg, ops, dead, 4, 0, {})
        else:
            loss, _ = _l1_loss(cc, xs, 0.5, ops, cfg, {})
        loss.backward()
        grads[backend] = (float(loss.detach()), {n: p.grad.clone() for n, p in cc.named_parameters() if p.grad is not None})
    (l_t, g_t), (l_k, g_k) = grads["torch"], grads["triton"]
    assert abs(l_t - l_k) <= 1e-4 * max(1.0, abs(l_t))
    assert set(g_t) == set(g_k)
    for name in g_t:
        _close(g_k[name], g_t[name], tol=1e-3)


@pytest.mark.parametrize("ranges", [DFC, FULL], ids=["dfc", "plain"])
def test_row_grad_bucket_matches_atomic_and_reference(ranges):
    """Decoder/encoder row gradients: latent-bucketed reduction == fp32 atomics == dense reference."""
    torch.manual_seed(13)
    bsz, d = 10, 40
    idx = torch.randint(-1, 64, (bsz, 7), device=DEV)
    idx[:, 0] = 20  # a busy latent: in every row (contention for the atomics, a long bucket)
    code = R.SparseCode.from_padded(idx)
    coef = torch.randn(code.nnz, device=DEV)
    vec = torch.randn(bsz, d, device=DEV)
    for m, (lo, hi) in enumerate(ranges):
        dense = code.to_dense(coef, 64)[:, lo:hi]  # [B, n_m]: the reference is dense^T @ vec
        ref = dense.t() @ vec
        a = K.scatter_outer(code, coef, vec, hi - lo, lo, hi, method="bucket")
        b = K.scatter_outer(code, coef, vec, hi - lo, lo, hi, method="atomic")
        _close(a, ref, tol=1e-4 if not ON_GPU else 2e-3)
        _close(a, b, tol=1e-4)
        assert torch.isfinite(a).all()


# ----------------------------------------------------------------------------- compiled on CUDA only

gpu_only = pytest.mark.skipif(not ON_GPU, reason="compiled kernels on a CUDA GPU (TRITON_INTERPRET=0)")


def _rel(a, b):
    a, b = a.double(), b.double()
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


@gpu_only
@pytest.mark.parametrize("method", ["bucket", "atomic"])
@pytest.mark.parametrize("ranges", [[(0, 3891), (205, 4096)], [(0, 4096), (0, 4096)]], ids=["dfc", "plain"])
def test_gpu_sparse_decode_realistic(ranges, method, monkeypatch):
    """d = 576, n = 4096, a BatchTopK code over 512 tokens (variable rows, busy latents) vs float64 reference."""
    monkeypatch.setattr(K, "ROW_GRAD", method)
    torch.manual_seed(14)
    n, d, bsz, k = 4096, 576, 512, 64
    ws = [torch.randn(hi - lo, d, device=DEV, requires_grad=True) for lo, hi in ranges]
    bs = [torch.randn(d, device=DEV, requires_grad=True) for _ in ranges]
    pop = torch.rand(n, device=DEV) ** 8  # a few latents fire on most tokens
    s = torch.rand(bsz, n, device=DEV) * pop
    code = R.batch_topk(s, k * bsz)
    assert code.width() > k
    vals = torch.rand(code.nnz, device=DEV, requires_grad=True)
    out_k = K.sparse_decode(code, vals, ws, ranges, bs)
    w64 = [w.detach().double().requires_grad_() for w in ws]
    b64 = [b.detach().double().requires_grad_() for b in bs]
    v64 = vals.detach().double().requires_grad_()
    out_r = R.sparse_decode(code, v64, w64, ranges, b64)
    for a, b in zip(out_k, out_r):
        assert _rel(a, b) < 1e-5
    go = [torch.randn_like(o) for o in out_k]
    gk = torch.autograd.grad(out_k, [vals, *ws, *bs], go)
    gr = torch.autograd.grad(out_r, [v64, *w64, *b64], [g.double() for g in go])
    for a, b in zip(gk, gr):
        assert torch.isfinite(a).all() and _rel(a, b) < 1e-5


@gpu_only
@pytest.mark.parametrize("ranges", [[(0, 950), (50, 1000)], [(0, 1000), (0, 1000)]], ids=["dfc", "plain"])
def test_gpu_fused_encoder_and_values_realistic(ranges):
    """Fused encoder (tf32) and the kept values' row-sparse gradients at d = 576, tiles not dividing B or n."""
    torch.manual_seed(15)
    n, d, bsz = 1000, 576, 300
    xs = [torch.randn(bsz, d, device=DEV) for _ in ranges]
    encs = [(torch.randn(hi - lo, d, device=DEV) / d**0.5).requires_grad_() for lo, hi in ranges]
    decs = [torch.randn(hi - lo, d, device=DEV) for lo, hi in ranges]
    b_enc = (torch.randn(n, device=DEV) * 0.1).requires_grad_()
    dn = K.decoder_norms(decs, ranges, n)
    assert _rel(dn, R.decoder_norms([w.double() for w in decs], ranges, n)) < 1e-6
    s_k = K.encode_scores(xs, [w.detach() for w in encs], b_enc.detach(), dn, ranges)
    x64, e64 = [x.double() for x in xs], [w.detach().double().requires_grad_() for w in encs]
    b64 = b_enc.detach().double().requires_grad_()
    s_r = R.scaled_relu(R.preacts(x64, e64, b64, ranges), dn.double())
    assert _rel(s_k, s_r.detach()) < 3e-3  # tf32
    code = R.batch_topk(s_r.detach(), 32 * bsz)  # same selection for both
    v_k = K.sparse_encode_values(s_k, dn, code, xs, encs, b_enc, ranges)
    v_r = R.sparse_encode_values(x64, e64, b64, code, ranges)
    assert _rel(v_k, v_r.detach()) < 3e-3
    g = torch.randn_like(v_k)
    gk = torch.autograd.grad(v_k, [*encs, b_enc], g)
    gr = torch.autograd.grad(v_r, [*e64, b64], g.double() * (v_k.detach() > 0).double())  # same active set
    for a, b in zip(gk, gr):
        assert torch.isfinite(a).all() and _rel(a, b) < 1e-3
