"""What the three crosscoder methods share: data preparation, training, metrics, findings.

Data: the pair's audit-corpus activations at one layer (default `ctx.middle_layer`, and model B's own
middle layer `ctx.middle_layer_b` for models of different depth); for models with different
tokenizers, the rows are the aligned positions of the pair (harness/data/align.py). Rows at position 0
are dropped (SmolLM2's attention sink has norm ~20000 vs ~50 elsewhere), as are rows whose norm is
more than `outlier_factor` x the median in either model; each model is then scaled by one scalar
so its training rows have mean norm sqrt(d). Texts are split (fixed seed) into training and
evaluation rows. Stores up to 200k tokens are loaded whole; larger ones are streamed shard by shard
and uniformly subsampled to `max_tokens`, so no more than that is ever held. With `data: stream` the rows come from
the models run over a text source instead (`streamed.py`), through the same `split_rows`.

Readouts fold the normalisation back in: a finding's readout computes the latent from raw
activations, w_m = W_enc_m[i] * scale_m; its direction is the owning model's decoder row in raw
units (x_raw += f * direction).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch

from ....core import NEVER_FIRES, Finding, Method, MethodConfig, NotApplicableError, PairContext, Readout, rank, save_run_metrics
from .module import Crosscoder
from .train import TrainConfig, TrainResult, init_from_data, train
from .evaluate import evaluate
from ....core.env import bf16_flag, cpu_threads

log = logging.getLogger(__name__)

IN_MEMORY_TOKENS = 200_000
SPLIT_SEED = 12345


@dataclass
class PairData:
    train: list[torch.Tensor]  # normalised [N, d_m]
    eval: list[torch.Tensor]
    scales: list[float]  # raw * scale = normalised
    layer_a: int
    layer_b: int
    n_dropped_pos0: int
    n_dropped_outliers: int

    @property
    def widths(self) -> list[int]:
        return [x.shape[1] for x in self.train]


def _n_tokens(store) -> int:
    return int(store.manifest.get("n_tokens") or sum(r.get("n", 0) for r in store.manifest.get("done", {}).values()))


def _load_rows(ctx: PairContext, layer_a: int, layer_b: int, max_rows: int, seed: int):
    """(acts_a, acts_b, text_idx, pos) for the pair, subsampled to about max_rows when streaming."""
    try:
        if _n_tokens(ctx.corpus.a) <= IN_MEMORY_TOKENS or getattr(ctx.corpus, "aligned", False):
            # aligned pairs (different tokenizers) are read whole: their rows are gathered by the alignment
            la, lb = ctx.corpus.load(layer_a, layer_b)
            return la.acts.float(), lb.acts.float(), la.text_idx, la.pos
        keep_p = min(1.0, max_rows / max(1, _n_tokens(ctx.corpus.a)))
        g = torch.Generator().manual_seed(seed)
        parts = []
        for sa, sb in zip(ctx.corpus.a.iter_shards(layer_a), ctx.corpus.b.iter_shards(layer_b)):
            if not (torch.equal(sa.token_id, sb.token_id) and torch.equal(sa.pos, sb.pos)):
                raise ValueError("stores are not token-aligned")
            keep = torch.rand(sa.pos.shape[0], generator=g) < keep_p
            parts.append((sa.acts[keep].float(), sb.acts[keep].float(), sa.text_idx[keep], sa.pos[keep]))
        return tuple(torch.cat([p[i] for p in parts]) for i in range(4))
    except ValueError as e:
        if "aligned" in str(e):
            raise NotApplicableError(f"crosscoders need token-aligned activations: {e}") from e
        raise


_PREPARED: dict[tuple, PairData] = {}  # the most recent pair's data: a pair's crosscoders and floor seeds share it

@dataclass(frozen=True)
class DataOptions:
    """What the data preparation reads (module docstring), taken from a method's typed config by `of`."""

    layer: int | None  # residual index; None = ctx.middle_layer
    max_tokens: int
    max_eval_tokens: int
    eval_frac: float
    drop_bos: bool
    outlier_factor: float | None  # None or 0: keep outliers
    layer_b: int | None = None  # model B's layer; None = layer (B's own middle layer for models of different depth)

    @classmethod
    def of(cls, cfg: MethodConfig) -> "DataOptions":
        """The data options of a crosscoder's or a one-model dictionary's config (the latter has no `layer_b`)."""
        return cls(**shared_fields(cls, cfg))


def shared_fields(cls: type, cfg: MethodConfig) -> dict[str, Any]:
    """The fields of dataclass `cls` that the typed config `cfg` also has, by name: a method's options for one part
    (its data preparation, its training run)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)}


def prepare_data(ctx: PairContext, opts: DataOptions) -> PairData:
    """The pair's training and evaluation rows (module docstring), computed once per pair and options: the three
    crosscoders and the random dictionary's 20 seeds read the same rows (about 1 s each to rebuild on this CPU). The
    seed only matters where rows are subsampled (more usable rows than `max_tokens`, or a streamed store); nothing
    downstream writes to these tensors."""
    n_tokens = _n_tokens(ctx.corpus.a)
    subsampled = n_tokens > opts.max_tokens or n_tokens > IN_MEMORY_TOKENS
    key = (str(ctx.corpus.a.root), str(ctx.corpus.b.root), ctx.corpus.alignment is not None, str(ctx.device),
           ctx.middle_layer, ctx.middle_layer_b if ctx.layers_b is not None else None, opts,
           ctx.seed if subsampled else None)
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = _prepare_data(ctx, opts)
    return _PREPARED[key]


def resolve_layers(ctx: PairContext, opts: DataOptions) -> tuple[int, int]:
    """(layer of model A, layer of model B) the options name (`layer`, `layer_b`; the middle layers by default)."""
    layer_a = opts.layer if opts.layer is not None else ctx.middle_layer
    if opts.layer_b is not None:
        return layer_a, opts.layer_b
    if ctx.layers_b is not None and opts.layer is None:
        return layer_a, ctx.middle_layer_b  # models of different depth: B's own middle layer
    return layer_a, layer_a


def _prepare_data(ctx: PairContext, opts: DataOptions) -> PairData:
    layer_a, layer_b = resolve_layers(ctx, opts)
    rows = _load_rows(ctx, layer_a, layer_b, int(opts.max_tokens * 1.3), ctx.seed)
    return split_rows(*rows, opts, ctx, layer_a, layer_b)[0]


@dataclass
class RowRules:
    """What `split_rows` fixed on its rows, for the rows a stream reads after them: outlier norm bounds, the
    held-out rows and the training rows, each row by (text index, position)."""

    max_norms: list[torch.Tensor | None]  # per model: rows with a larger norm are outliers (None: no filter)
    eval_rows: tuple[torch.Tensor, torch.Tensor]  # (text_idx, pos) of the rows of held-out texts
    train_rows: tuple[torch.Tensor, torch.Tensor]  # (text_idx, pos) of PairData.train's rows, in its order


def split_rows(xa: torch.Tensor, xb: torch.Tensor, text_idx: torch.Tensor, pos: torch.Tensor, opts: DataOptions,
               ctx: PairContext, layer_a: int, layer_b: int) -> tuple[PairData, RowRules]:
    """Training and evaluation rows of raw paired rows (module docstring: position 0, outliers, split by text, the
    `max_tokens` cap, scales) and the rules it fixed."""
    max_tokens = opts.max_tokens
    keep = torch.ones(xa.shape[0], dtype=torch.bool)
    n_pos0 = 0
    if opts.drop_bos:
        keep &= pos > 0
        n_pos0 = int((pos == 0).sum())
    n_out = 0
    max_norms: list[torch.Tensor | None] = [None, None]
    if opts.outlier_factor:
        bad = torch.zeros_like(keep)
        for m, x in enumerate((xa, xb)):
            norms = x.norm(dim=1)
            med = norms[keep].median() if keep.any() else norms.median()
            max_norms[m] = opts.outlier_factor * med
            bad |= norms > max_norms[m]
        n_out = int((bad & keep).sum())
        keep &= ~bad
    xa, xb, text_idx, pos = xa[keep], xb[keep], text_idx[keep], pos[keep]
    if xa.shape[0] < 16:
        raise NotApplicableError(f"only {xa.shape[0]} usable activation rows at layer {layer_a}")
    # split by text, fixed seed: the evaluation rows are the same for every method seed
    texts = torch.unique(text_idx)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    n_eval_texts = max(1, int(round(opts.eval_frac * texts.numel()))) if texts.numel() > 1 else 0
    eval_texts = texts[torch.randperm(texts.numel(), generator=g)[:n_eval_texts]]
    is_eval = torch.isin(text_idx, eval_texts)
    if is_eval.all() or not is_eval.any() or is_eval.sum() < 8:
        is_eval = torch.rand(xa.shape[0], generator=g) < opts.eval_frac
    tr = (~is_eval).nonzero().squeeze(1)
    ev = is_eval.nonzero().squeeze(1)
    g2 = torch.Generator().manual_seed(ctx.seed)
    if tr.numel() > max_tokens:
        tr = tr[torch.randperm(tr.numel(), generator=g2)[:max_tokens]]
    rules = RowRules(max_norms, (text_idx[ev], pos[ev]), (text_idx[tr], pos[tr]))
    max_eval = opts.max_eval_tokens
    if ev.numel() > max_eval:
        ev = ev[torch.randperm(ev.numel(), generator=torch.Generator().manual_seed(SPLIT_SEED))[:max_eval]]
    scales = []
    train_x, eval_x = [], []
    for x in (xa, xb):
        xt = x[tr]
        c = math.sqrt(x.shape[1]) / float(xt.norm(dim=1).mean())
        scales.append(c)
        train_x.append((xt * c).to(ctx.device))
        eval_x.append((x[ev] * c).to(ctx.device))
    return PairData(train_x, eval_x, scales, layer_a, layer_b, n_pos0, n_out), rules


@dataclass
class CrosscoderConfig(MethodConfig):
    """What every crosscoder shares; each registered crosscoder's config sets its own steps, batch and rule."""

    layer: int | None = None  # residual index; None = ctx.middle_layer
    layer_b: int | None = None  # model B's layer when it differs (cross-architecture); None = layer
    dict_size: int = 2048
    steps: int = 300
    batch_size: int = 256
    lr: float = 3e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2
    grad_clip: float = 1.0
    max_tokens: int = 40_000  # training rows (after dropping position 0 and outliers)
    max_eval_tokens: int = 8192
    max_stat_tokens: int = 8192  # training rows used for the training-set statistics (EV, firing frequency)
    eval_frac: float = 0.1  # share of texts held out for evaluation
    drop_bos: bool = True
    outlier_factor: float = 10.0
    max_findings: int = 50
    backend: Literal["auto", "torch", "triton"] = "auto"  # auto = triton on CUDA
    bf16: bool | str | None = "auto"  # torch path: bf16 autocast for the dense matmuls; auto = on CPUs with AMX/AVX512-BF16
    log_every: int = 0
    data_init_frac: float = 0.25  # share of latents initialised from (centred) training rows
    save_weights: bool = False  # with ctx.work_dir: also save the crosscoder (<name>-<pair>-seed<s>.pt, ~19 MB at defaults)
    threads: int | str | None = "auto"  # torch CPU threads for the whole run: auto = core/env.py pick_threads; None = leave
    # where the training rows come from: "stored" = the collect stage's activation stores; "stream" = both models run
    # over a text source while training, nothing stored (_lib/streamed.py: calibration block, skipped rows, buffer)
    data: Literal["stored", "stream"] = "stored"
    stream_tokens: int | None = None  # data=stream: rows the gradient steps draw (steps = this / batch_size); None = steps x batch_size
    buffer_rows: int = 32_768  # data=stream: the shuffle buffer's rows (32,768 x (576 + 576) fp32 = 151 MB for SmolLM2)
    stream_texts: str | None = None  # data=stream: a UTF-8 file, one text per line; None = the audit corpus's tokens


STREAM_FIELDS = ("data", "stream_tokens", "buffer_rows", "stream_texts")  # the options only data=stream reads


class CrosscoderMethod(Method):
    """Shared driver; subclasses set `name`, `Config`, `sparsity` and implement `select`."""

    stochastic: ClassVar[bool] = True
    cross_architecture: ClassVar[bool] = True  # reads each model's own activations, aligned across tokenizers
    Config: ClassVar[type] = CrosscoderConfig
    cfg: CrosscoderConfig
    sparsity: ClassVar[str] = "batchtopk"

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.cfg.data == "stored":
            # the stored path's config (and so its config hash) is the one it had before the stream options existed:
            # packaged flag calibrations and saved findings apply only under their hash
            for key in STREAM_FIELDS:
                self.config.pop(key)
        elif self.cfg.buffer_rows < self.cfg.batch_size:
            raise ValueError(f"buffer_rows ({self.cfg.buffer_rows}) must hold at least one batch ({self.cfg.batch_size})")
        self.last_metrics: dict[str, Any] = {}
        self.crosscoder: Crosscoder | None = None
        self.data: PairData | None = None

    # -- pieces a subclass can change -------------------------------------------------
    def sections(self, dict_size: int) -> tuple[int, int, int]:
        """(n_excl_a, n_shared, n_excl_b)."""
        return 0, dict_size, 0

    def train_steps(self) -> int:
        """Gradient steps: `steps`, or with data=stream and `stream_tokens`, stream_tokens / batch_size."""
        c = self.cfg
        if c.data == "stream" and c.stream_tokens is not None:
            return max(1, c.stream_tokens // c.batch_size)
        return c.steps

    def train_config(self, ctx: PairContext, backend: str) -> TrainConfig:
        tc = TrainConfig(**shared_fields(TrainConfig, self.cfg))
        tc.steps = self.train_steps()
        tc.sparsity = self.sparsity
        tc.seed = ctx.seed
        tc.backend = backend
        tc.bf16 = bf16_flag(self.cfg.bf16, ctx.device)
        tc.threads = None  # find() has already set the thread count for the whole run
        tc.progress = ctx.progress
        if isinstance(tc.adam_betas, list):
            tc.adam_betas = tuple(tc.adam_betas)
        return tc

    def trained_width(self) -> int:
        """Latents the crosscoder is built and trained with: `dict_size` (BatchTopK caps it by its training samples)."""
        return self.cfg.dict_size

    def init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the `Crosscoder` the method builds, beyond widths, sections and seed."""
        return {}

    def eval_mode(self) -> str:
        return "relu" if self.sparsity == "l1" else "threshold"

    def select(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any]) -> list[Finding]:
        raise NotImplementedError

    # -- driver ---------------------------------------------------------------------
    def fit(self, ctx: PairContext) -> tuple[Crosscoder, PairData, dict[str, Any]]:
        from .module import resolve_backend

        cfg = self.cfg
        backend = resolve_backend(cfg.backend, ctx.device)
        tc = self.train_config(ctx, backend)
        stream_metrics: dict[str, Any] = {}
        stream = batches = None
        if cfg.data == "stream":
            from .streamed import stream_data

            data, batches, stream = stream_data(ctx, DataOptions.of(cfg), cfg.stream_texts, cfg.buffer_rows, tc)
        else:
            data = prepare_data(ctx, DataOptions.of(cfg))
        n_a, n_s, n_b = self.sections(self.trained_width())
        cc = Crosscoder(data.widths, n_s, n_a, n_b, seed=ctx.seed, **self.init_kwargs()).to(ctx.device)
        init_from_data(cc, data.train, seed=ctx.seed, data_frac=cfg.data_init_frac)
        res: TrainResult = train(cc, data.train, tc, batches)
        if stream is not None and batches is not None:
            stream_metrics = {"data": "stream", "stream_rows_buffered": batches.rows_read, "stream_buffer_fills": batches.fills,
                              "stream_passes": stream.passes, "stream_rows_read": stream.rows}
        cc.eval()
        mode = self.eval_mode()
        ev = evaluate(cc, data.eval, mode, k=tc.k)
        tr = evaluate(cc, subsample(data.train, cfg.max_stat_tokens, ctx.seed), mode, k=tc.k)
        metrics = {
            "ev_a": ev["ev_a"], "ev_b": ev["ev_b"], "l0": ev["l0"], "dead_frac": ev["dead_frac"],
            "dead_frac_train": res.dead_frac_train, "train_ev_a": tr["ev_a"], "train_ev_b": tr["ev_b"],
            "train_seconds": res.seconds, "train_tokens": data.train[0].shape[0], "eval_tokens": data.eval[0].shape[0],
            "tokens_seen": res.tokens_seen, "threads": res.threads, "steps": res.steps, "final_loss": res.final_loss,
            "dict_size": cc.n, "dict_size_requested": cfg.dict_size, "layer_a": data.layer_a, "layer_b": data.layer_b, "backend": backend,
            "dropped_pos0": data.n_dropped_pos0, "dropped_outliers": data.n_dropped_outliers, **stream_metrics,
        }
        if self.sparsity == "batchtopk":
            metrics["threshold"] = float(cc.threshold)
            if getattr(cc, "ema_threshold", None) is not None:
                metrics["threshold_ema"] = float(cc.ema_threshold)
            metrics["k"] = tc.k
        log.info("%s on %s: %s", self.name, ctx.pair_id, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()})
        metrics["_fires_eval"], metrics["_fires_train"], metrics["_n_train_sample"] = ev["fires"], tr["fires"], tr["n_tokens"]
        metrics["_history"] = res.history
        return cc, data, metrics

    def find(self, ctx: PairContext) -> list[Finding]:
        torch.manual_seed(ctx.seed)
        with cpu_threads(self.cfg.threads, ctx.device) as n_threads:
            cc, data, metrics = self.fit(ctx)
            metrics["threads"] = n_threads
            self.crosscoder, self.data = cc, data
            findings = rank(self.select(ctx, cc, data, metrics))[: self.cfg.max_findings]
        self.last_metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
        out = save_run_metrics(ctx, self.name, {**self.last_metrics, "history": metrics["_history"], "config": self.config})
        if out is not None and self.cfg.save_weights:
            torch.save({"state_dict": cc.state_dict(), "scales": data.scales, "sections": self.sections(cc.n),
                        "widths": cc.widths, "score_norm": cc.score_norm}, f"{out}.pt")
        return findings

    # -- helpers for select() -----------------------------------------------------------
    def emit(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any],
             rows: list[tuple[int, str, float, bool, dict[str, Any]]]) -> list[Finding]:
        """Findings for the `max_findings` highest-uniqueness (latent, side, uniqueness, flagged, info)
        rows (the logit lens is only run for those)."""
        rows = sorted(rows, key=lambda r: -r[2])[: self.cfg.max_findings]
        directions = [self.direction(cc, data, i, side) for i, side, *_ in rows]
        lenses: dict[int, tuple[list[int], list[str]]] = {}
        for side in ("a", "b"):  # one batched logit lens per model
            idx = [j for j, r in enumerate(rows) if r[1] == side]
            if idx:
                lenses.update(zip(idx, ctx.logit_lens_many(torch.stack([directions[j] for j in idx]), side, k=20)))
        return [self.make_finding(ctx, cc, data, metrics, i, side, u, fl, info, directions[j], lenses[j])
                for j, (i, side, u, fl, info) in enumerate(rows)]

    @staticmethod
    def direction(cc: Crosscoder, data: PairData, i: int, side: str) -> torch.Tensor:
        """Latent i's decoder row in its own model, in raw activation units."""
        m_side = 1 if side == "b" else 0
        return (cc.dec_row(m_side, i).detach().float() / data.scales[m_side]).cpu()

    def make_finding(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any], i: int,
                     side: str, uniqueness: float, flagged: bool, info: dict[str, Any], direction: torch.Tensor,
                     lens: tuple[list[int], list[str]]) -> Finding:
        w = []
        for m in range(2):
            row = cc.enc_row(m, i)
            w.append(None if row is None else (row.detach().float() * data.scales[m]).cpu())
        dn = float(cc.selection_norms()[i])
        if self.sparsity == "batchtopk":
            threshold = float(cc.threshold) / dn if dn > 0 else NEVER_FIRES
        else:
            threshold = 0.0
        readout = Readout(layer_a=data.layer_a, layer_b=data.layer_b, kind="linear", w_a=w[0], w_b=w[1],
                          bias=float(cc.readout_bias()[i]), act="relu", threshold=threshold)
        ids, toks = lens
        base = {k: float(v) for k, v in metrics.items() if not k.startswith("_") and isinstance(v, (int, float))}
        base["backend"] = str(metrics.get("backend", ""))
        full = {**base, "latent": float(i), "section": cc.section_of(i),
                "fires_eval": float(metrics["_fires_eval"][i]),
                "freq_train": float(metrics["_fires_train"][i]) / max(1, int(metrics["_n_train_sample"])), **{k: (v if isinstance(v, str) else float(v)) for k, v in info.items()}}
        return Finding(
            id=f"{self.name}:{ctx.pair_id}:L{data.layer_b if side == 'b' else data.layer_a}:latent{i}",
            uniqueness=float(uniqueness), flagged=bool(flagged), readout=readout, side=side,  # type: ignore[arg-type]
            direction=direction, direction_layer=data.layer_b if side == "b" else data.layer_a,
            tokens=toks, token_ids=ids, info=full,
        )


def subsample(xs: list[torch.Tensor], n: int, seed: int) -> list[torch.Tensor]:
    if xs[0].shape[0] <= n:
        return xs
    rows = torch.randperm(xs[0].shape[0], generator=torch.Generator().manual_seed(seed + 3))[:n].to(xs[0].device)
    return [x.index_select(0, rows) for x in xs]


def relative_norms(cc: Crosscoder) -> torch.Tensor:
    """r_i = ||d_i^B|| / (||d_i^A|| + ||d_i^B||)  -> [n] (cpu)."""
    norms = cc.per_model_norms().cpu()
    return norms[1] / (norms[0] + norms[1]).clamp(min=1e-12)

