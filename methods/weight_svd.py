"""Weight-difference SVD: the top singular directions of Delta W = W_B - W_A per changed linear module.

Works on the two models' weights as loaded (LoRA adapters are merged by `load_model`), so merged
adapters and full fine-tunes are handled alike. Both models must share the architecture (model
type, depth, width, and every linear module's shape); otherwise `NotApplicableError` says why.
Modules whose weights are identical are skipped. For each changed `nn.Linear` inside a decoder block
the top `per_module` singular triplets (s, u, v) of Delta W (fp32; exact SVD for small matrices,
`torch.svd_lowrank` with `oversample` extra columns above `exact_max_dim`, which is exact for a
merged LoRA of rank <= per_module + oversample); all triplets are ranked by s across modules and
the top `max_findings` become findings. Uniqueness = s; flagged when s >= `flag_threshold` times the
module's rms singular value ||W_A||_F / sqrt(min(out, in)) (our rule).

* Write modules (o_proj, down_proj; generally a module whose output is the residual width and whose
  input is not): u is a residual-stream direction written by block l into residual index l + 1
  (clamped to n_layers - 1, the last index the activation store holds). Readout = |(h_B - h_A) . u|
  at that layer (0 with model B replaced by model A); direction = u; tokens = the logit lens of u in
  model B, interleaved with that of -u (Delta W fixes u only up to sign: the input decides which
  way the module writes).
* Read modules (q/k/v/gate/up_proj; generally input = residual width): v reads the RMS-normalised
  residual at the block's input, residual index l (clamped to >= 1: block 0 reads the embeddings,
  which the store does not hold; MLP reads are approximated by the block input too, since the
  mid-block stream is not stored). Readout = s * |(g * v) . rms_norm(h_B)| on model B, with g the
  input norm's gain (`input_layernorm` for attention, `post_attention_layernorm` /
  `pre_feedforward_layernorm` for the MLP): the size of what Delta W adds at that token, i.e. how a
  trigger detector hidden in an adapter shows up. Direction = g * v (unit), the residual direction
  read; tokens = the embedding lens: tokens whose input embedding has the largest |E_t . (g * v)|.
  The scoring control reads the same direction on model A's activations; a read direction that
  detects a feature model A already represents is therefore reported as pre-existing by the protocol.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..core.env import cpu_threads
from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, NotApplicableError, PairContext, Readout, register_method
from ..core.lens import lens_ids

WRITE = {"o_proj", "down_proj", "out_proj", "dense", "fc2", "c_proj"}
READ = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "qkv_proj", "gate_up_proj", "fc1"}
MLP = ("mlp.", "feed_forward.")


def _gain(norm: nn.Module | None, family, d: int) -> torch.Tensor:
    if norm is None or getattr(norm, "weight", None) is None:
        return torch.ones(d)
    return family.norm_gain(norm).cpu()


def _architecture_mismatch(ctx: PairContext) -> str | None:
    ca, cb = ctx.model_a.model.config, ctx.model_b.model.config
    for attr in ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        va, vb = getattr(ca, attr, None), getattr(cb, attr, None)
        if va != vb:
            return f"{attr} differs ({va} vs {vb})"
    return None


def top_singular(dw: torch.Tensor, k: int, exact_max_dim: int, oversample: int, seed: int):
    """Top-k (s [k], u [out, k], v [in, k]) of dw (fp32)."""
    k = min(k, min(dw.shape))
    if min(dw.shape) <= exact_max_dim:
        u, s, vh = torch.linalg.svd(dw, full_matrices=False)
        return s[:k], u[:, :k], vh[:k].t()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(dw, q=min(k + oversample, min(dw.shape)), niter=4)
    return s[:k], u[:, :k], v[:, :k]


@dataclass
class WeightSVDConfig(MethodConfig):
    per_module: int = 4  # top singular triplets per changed module
    max_findings: int = 20  # across modules, by singular value
    flag_threshold: float = 0.1  # flag when s >= this x the module's rms singular value ||W_A||_F / sqrt(min(out, in))
    exact_max_dim: int = 256  # exact SVD up to this min(out, in); randomized low-rank SVD above
    oversample: int = 12
    n_tokens: int = 20
    threads: int | str | None = "auto"


@register_method
class WeightSVD(Method):
    name = "weight_svd"
    Config = WeightSVDConfig
    cfg: WeightSVDConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.summary: dict[str, Any] = {}

    def find(self, ctx: PairContext) -> list[Finding]:
        with cpu_threads(self.cfg.threads, ctx.device):
            return self._find(ctx)

    def _find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        why = _architecture_mismatch(ctx)
        if why:
            raise NotApplicableError(f"weight diffs need the same architecture: {why}")
        ma, mb = ctx.model_a, ctx.model_b
        d, n_layers = mb.hidden_size, mb.n_layers
        blocks_a, blocks_b = ma.decoder_layers(), mb.decoder_layers()
        # every parameter, to say what changed outside the decoder-block linears
        pa = dict(ma.model.named_parameters(remove_duplicate=False))  # tied weights under every name
        pb = dict(mb.model.named_parameters(remove_duplicate=False))
        if pa.keys() != pb.keys():
            raise NotApplicableError(f"weight diffs need the same parameters; only in one model: {sorted(pa.keys() ^ pb.keys())[:5]}")
        triplets = []  # (s, layer, module name, role, u, v, rms_sv)
        changed_modules, other_changed = [], []
        linear_params = set()
        for l, (ba, bb) in enumerate(zip(blocks_a, blocks_b)):
            mods_b = dict(bb.named_modules())
            for name, mod_a in ba.named_modules():
                if not isinstance(mod_a, nn.Linear):
                    continue
                mod_b = mods_b.get(name)
                if not isinstance(mod_b, nn.Linear) or mod_b.weight.shape != mod_a.weight.shape:
                    raise NotApplicableError(f"weight diffs need equal module shapes; layers.{l}.{name} differs")
                linear_params.add(id(mod_b.weight))
                wa, wb = mod_a.weight.detach(), mod_b.weight.detach()
                if torch.equal(wa, wb):
                    continue
                leaf = name.rsplit(".", 1)[-1]
                out_f, in_f = wa.shape
                if leaf in WRITE or (leaf not in READ and out_f == d and in_f != d):
                    role = "write"
                elif leaf in READ or in_f == d:
                    role = "read"
                else:
                    continue  # neither reads nor writes the residual stream
                dw = wb.float().cpu() - wa.float().cpu()
                changed_modules.append(f"{l}.{name}")
                rms_sv = float(wa.float().norm()) / math.sqrt(min(wa.shape))
                s, u, v = top_singular(dw, c.per_module, c.exact_max_dim, c.oversample, ctx.seed + l)
                for j in range(s.numel()):
                    if float(s[j]) > 0:
                        triplets.append((float(s[j]), l, name, role, u[:, j].clone(), v[:, j].clone(), rms_sv, j))
        for pname, p in pb.items():
            if id(p) not in linear_params and not torch.equal(p.detach(), pa[pname].detach()):
                other_changed.append(pname)
        self.summary = {"changed_linear_modules": len(changed_modules), "other_changed_parameters": other_changed}
        triplets.sort(key=lambda t: (-t[0], t[1], t[2], t[7]))
        top = triplets[: c.max_findings]
        k = c.n_tokens
        # residual directions: write modules -> u (unit); read modules -> g * v, the normalised input it reads
        units = []
        for s, l, name, role, u, v, rms_sv, j in top:
            if role == "write":
                units.append(u / u.norm().clamp_min(1e-12))
            else:
                blk = mb.decoder_layers()[l]
                norm = getattr(blk, mb.family.mlp_input_norm if name.startswith(MLP) else mb.family.attn_input_norm, None)
                r = _gain(norm, mb.family, v.numel()) * v
                units.append(r)
        writes = [i for i, t in enumerate(top) if t[3] == "write"]
        reads = [i for i, t in enumerate(top) if t[3] != "write"]
        token_ids: dict[int, list[int]] = {}
        if writes:  # logit lens of +u and -u, interleaved (Delta W fixes u only up to sign)
            w_units = torch.stack([units[i] for i in writes])
            ids = lens_ids(mb, torch.cat([w_units, -w_units]), k=k)
            for n, i in enumerate(writes):
                token_ids[i] = [t for pair in zip(ids[n], ids[n + len(writes)]) for t in pair][:k]
        if reads:  # embedding lens: input tokens whose embedding the read direction picks up most
            w_e = mb.model.get_input_embeddings().weight.detach().float()
            r_units = torch.stack([units[i] / units[i].norm().clamp_min(1e-12) for i in reads])
            ids = (r_units.to(w_e.device) @ w_e.t()).abs().topk(k, dim=1).indices.tolist()
            token_ids.update(zip(reads, ids))
        out = []
        for n, (s, l, name, role, u, v, rms_sv, j) in enumerate(top):
            rel = s / max(rms_sv, 1e-12)
            info: dict[str, Any] = {"singular_value": s, "relative": rel, "layer": float(l), "module": name, "role": role,
                                    "index": float(j), "changed_linear_modules": float(len(changed_modules)),
                                    "other_changed": ",".join(other_changed[:8])}
            if role == "write":
                layer = min(l + 1, n_layers - 1)
                unit = units[n]
                readout = Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-unit, w_b=unit.clone(), act="abs")
                info["layer_approximated"] = "yes" if l + 1 > n_layers - 1 else "no"
            else:
                layer = max(l, 1)
                r = units[n]
                unit = r / r.norm().clamp_min(1e-12)
                readout = Readout(layer_a=layer, layer_b=layer, kind="linear", w_b=(r * s), act="abs", input_norm="rms")
                info["layer_approximated"] = "yes" if (l == 0 or name.startswith(MLP)) else "no"
            ids = token_ids[n]
            out.append(Finding(id=f"weight_svd:{l}.{name}:sv{j}", uniqueness=s, flagged=rel >= c.flag_threshold,
                               readout=readout, side="b", direction=unit, direction_layer=layer,
                               tokens=[mb.tokenizer.decode([i]) for i in ids], token_ids=ids, info=info))
        return out
