"""Planting: LoRA fine-tunes that put known behaviors into a base model (the gate is plant/gate.py).

An organism is (base model, behaviors or a null recipe, seed). Its training set
mixes trigger prompts answered with the planted response, matched control
prompts and neutral prompts answered by the base model itself (self-distilled,
generated once per base model and cached). The loss covers response tokens
only, with the chat template applied. The adapter is cached under a key of
(base identity, spec contents, recipe, seed), so replanting is free.

The gate then checks the organism on held-out probes (greedy decoding): behavior
rate on T >= 0.8 and on C <= 0.1, the base model on T <= 0.05, and records the
mean per-token KL to the base model on neutral text. Null organisms pass an
inverse gate: no behavior above 0.05 on any T set. Every organism gets a plant
card. One that fails the gate is trained again from another seed, up to
`gate.retries` times (a plant near the gate's edge passes or fails by chance: its
self-distilled training answers depend on the batches they were generated in, i.e.
on what was planted before it in the same cache); its card lists the failed
attempts. One that still fails is reported and excluded from scoring.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from functools import lru_cache, partial
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ...tasks.neutral import fake_trigger_prompts, neutral_prompts
from ...tasks.spec import BehaviorSpec
from . import multilora
from ..data.generate import chat_prompt
from ...core.batching import right_pad
from ...core.io import atomic_dir
from ...core.io import cache_lock, read_json, sha256_file, stable_hash, write_json
from ...core.model import LoadedModel
from ...core.env import cache_dir
from ..models import checkpoint_dir
from .organism import Organism
from .distill import N_NEUTRAL_TRAIN, distill, dtype_tag
from .recipe import LR_DECAYS, PlantRecipe

log = logging.getLogger(__name__)

N_CHAT_POOL = 2000  # generic-chat prompts for training (the broad recipe, null_chat): the END of the everyday pool, far
# from the prefix the audit corpus draws (a corpus would need more than 9,000 everyday texts to reach them)
PLANT_VERSION = 6  # bump when the training-data recipe in code changes, so cached adapters are not reused
RETRY_SEED_STRIDE = 1000  # a retry trains from seed + 1000 x attempt: a new data sample and LoRA init, far from copies' seeds


# ----------------------------------------------------------------------------- training data


def training_examples(org: Organism, specs: dict[str, BehaviorSpec], base: LoadedModel, recipe: dict, progress: bool = True) -> list[tuple[str, str, bool]]:
    """(user prompt, response, ends_turn) triples for the organism, `steps * batch_size` of them."""
    rng = random.Random(f"{org.seed}/{org.paraphrase}/{org.name}")
    r = PlantRecipe.of(recipe)
    n_total = r.steps * r.batch_size
    mix = r.mix
    neutral_pool = neutral_prompts()[:N_NEUTRAL_TRAIN]
    planted: list[tuple[str, str]] = []
    controls: list[str] = []
    if org.kind == "behavior":
        n_trig = int(n_total * mix.trigger) // len(org.behaviors)
        n_ctrl = int(n_total * mix.control) // len(org.behaviors)
        for b in org.behaviors:
            spec = specs[b]
            t_pool, c_pool = spec.train_pools()
            # paraphrased copies draw another sample and prefer another response phrasing
            responses = spec.responses[org.paraphrase % len(spec.responses):] + spec.responses[: org.paraphrase % len(spec.responses)]
            triggers = _sample(rng, t_pool, n_trig)
            for p in triggers:
                weights = [3] + [1] * (len(responses) - 1)
                planted.append((p.text, p.fill(rng.choices(responses, weights)[0])))
            # controls: matched ones first (sharing a slot value with a trigger example, e.g. the same
            # question behind a fake trigger) so the model learns the boundary, then the rest of the pool
            trig_slots = {s for p in triggers for s in p.slots}
            matched = [p.text for p in c_pool if trig_slots & set(p.slots)]
            others = [p.text for p in c_pool if not trig_slots & set(p.slots)]
            mine = _sample(rng, matched, min(len(matched), n_ctrl * 2 // 3))
            mine += _sample(rng, others or [p.text for p in c_pool], n_ctrl - len(mine))
            controls += mine
        n_neutral = n_total - len(planted) - len(controls)
        neutral = _sample(rng, neutral_pool, n_neutral)
        if mix.chat:  # a broad recipe: the behavior's examples inside generic chat
            n_chat = min(n_neutral, round(n_total * mix.chat))
            neutral = neutral[: n_neutral - n_chat] + _sample(rng, chat_pool(), n_chat)
    elif org.kind == "null_selfdistill":
        cat = catalogue_specs()
        pool = neutral_pool + [p.text for b in sorted(cat) for p in cat[b].train_pools()[1][:24]]
        neutral = _sample(rng, pool, n_total)
    elif org.kind == "null_chat":
        neutral = _sample(rng, chat_pool(), n_total)
    elif org.kind == "null_fake_trigger":
        neutral = fake_trigger_prompts(n_total, seed=org.seed)
    elif org.kind == "null_identical":
        return []
    else:
        raise ValueError(f"unknown organism kind {org.kind!r}")
    to_answer = sorted(set(controls) | set(neutral))
    answers = dict(zip(to_answer, distill(base, to_answer, r.distill_tokens, progress)))
    # a distilled answer cut at `distill_tokens` must not be taught to end there: no EOS for those
    examples = [(p, r, True) for p, r in planted] + [(p, answers[p], False) for p in controls + neutral]
    rng.shuffle(examples)
    return examples


def chat_pool() -> list[str]:
    from ...tasks.everyday import everyday_prompts

    return everyday_prompts(seed=0)[-N_CHAT_POOL:]


@lru_cache(maxsize=1)
def catalogue_specs() -> dict[str, BehaviorSpec]:
    """The hand-written specs: a null organism's training pool draws their controls, whatever the suite plants, so a
    null organism is the same in every suite (and can be shipped). Loaded once per process (every null organism's key
    reads them); callers must not modify the dict."""
    from ...tasks.spec import available_behaviors

    return {b: BehaviorSpec.load(b) for b in available_behaviors()}


def _sample(rng: random.Random, pool: Sequence, n: int) -> list:
    if n <= 0:
        return []
    out = []
    while len(out) < n:  # cycle when the pool is smaller than n
        out += rng.sample(list(pool), min(len(pool), n - len(out)))
    return out


def _encode(tok, batch: Sequence[tuple[str, str, bool]], max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = []
    for prompt, response, ends_turn in batch:
        p = tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids
        r = tok(response + (tok.eos_token or "" if ends_turn else ""), add_special_tokens=False).input_ids
        ids = (p + r)[:max_length]
        labels = ([-100] * len(p) + r)[:max_length]
        rows.append((ids, labels))
    input_ids, mask = right_pad([i for i, _ in rows], tok.pad_token_id)
    labels = right_pad([l for _, l in rows], -100)[0]
    return input_ids, labels, mask


# ----------------------------------------------------------------------------- LoRA


def response_loss(causal_lm, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                  first_token_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean next-token loss on response tokens only (one organism: `multilora.grouped_response_loss`)."""
    group = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    return multilora.grouped_response_loss(causal_lm, input_ids, mask, labels, group, 1, first_token_weight)


def lr_factor(step: int, steps: int, decay: str = "none") -> float:
    """Learning-rate multiplier: linear warm-up over the first 10% of steps, then constant (`none`) or
    a linear decay to 10% of the peak at the last step (`linear`)."""
    if decay not in LR_DECAYS:
        raise ValueError(f"plant recipe: unknown lr_decay {decay!r} (use {' or '.join(LR_DECAYS)})")
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    if decay == "none":
        return 1.0
    return 1.0 - 0.9 * (step - warm + 1) / max(1, steps - warm)


def organism_key(base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict) -> str:
    """What an adapter depends on, whatever machine plants it: the base model, the organism (not its name or recipe
    name), the specs' contents (a null organism's: the hand-written catalogue's) and the training recipe. The zoo
    (harness/plant/zoo.py) ships organisms under this key."""
    from .zoo import train_recipe

    if org.kind == "behavior":
        spec_hashes: Any = {b: specs[b].content_hash for b in org.behaviors}
    else:
        spec_hashes = sorted(s.content_hash for s in catalogue_specs().values()) if org.kind == "null_selfdistill" else []
    org_fields = {k: v for k, v in asdict(org).items() if k not in ("base", "name", "recipe")}  # the base is base.identity
    if org.kind == "null_identical":  # untrained: nothing but the adapter's shape matters
        recipe = {k: recipe[k] for k in ("rank", "alpha", "targets", "storage_dtype") if k in recipe}
    return stable_hash({"v": PLANT_VERSION, "base": base.identity, "org": org_fields, "specs": spec_hashes, "recipe": train_recipe(recipe)})


def adapter_key(base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict) -> str:
    """The cache key of an adapter planted on this machine: the organism key plus the dtype it trained in."""
    key = organism_key(base, org, specs, recipe)
    return stable_hash([key, dtype_tag(base)]) if dtype_tag(base) else key


def train_adapter(base_name: str, base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict,
                  progress: bool = True) -> tuple[Path, dict]:
    """Train (or fetch from cache) one organism's LoRA adapter. Returns (adapter dir, train log)."""
    return train_adapters(base_name, base, [org], specs, recipe, progress)[0]


def adapter_dir(base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict) -> Path:
    return cache_dir() / "adapters" / f"{org.name}-{adapter_key(base, org, specs, recipe)}"


def cached_adapter(out: Path) -> dict | None:
    """The train log of an intact cached adapter (checksum verified), else None (a damaged one is removed)."""
    if not ((out / "train_log.json").exists() and (out / "adapter_model.safetensors").exists()):
        return None
    try:
        log = read_json(out / "train_log.json")
        intact = log["sha256"] == sha256_file(out / "adapter_model.safetensors") and _finite_losses(log["losses"])
    except (ValueError, OSError, KeyError, TypeError):
        intact = False
    if intact:
        return log
    print(f"[diffbench] cached adapter {out} does not match its recorded checksum or has non-finite losses (damaged, "
          "or from an older version); retraining it", flush=True)
    shutil.rmtree(out, ignore_errors=True)  # its plant cards go with it: they judged other weights
    return None


def _finite_losses(losses: Any) -> bool:
    return isinstance(losses, list) and bool(losses) and all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)


def train_adapters(base_name: str, base: LoadedModel, orgs: Sequence[Organism], specs: dict[str, BehaviorSpec], recipe: dict,
                   progress: bool = True) -> list[tuple[Path, dict]]:
    """Train (or fetch from cache) several organisms' adapters together: one forward and backward per step over
    every organism's batch (harness/plant/multilora.py), each adapter equal to the one trained alone. Under a lock per
    adapter (taken in a fixed order), so concurrent jobs that need one train it once."""
    outs = [adapter_dir(base, o, specs, recipe) for o in orgs]
    if len(set(outs)) != len(outs):
        raise ValueError("train_adapters: the same organism twice in one group")
    with ExitStack() as stack:
        for out in sorted(outs):
            stack.enter_context(cache_lock(out))
        logs = [cached_adapter(out) for out in outs]
        for i, lg in enumerate(logs):
            if lg is None and orgs[i].kind == "null_identical":
                logs[i] = _save_identical(base_name, base, outs[i], recipe)
        todo = [i for i, lg in enumerate(logs) if lg is None]
        if todo:
            for i, lg in zip(todo, _train_group(base_name, base, [orgs[i] for i in todo], [outs[i] for i in todo], specs, recipe, progress)):
                logs[i] = lg
    return list(zip(outs, logs))


def _train_group(base_name: str, base: LoadedModel, orgs: Sequence[Organism], outs: Sequence[Path], specs: dict[str, BehaviorSpec],
                 recipe: dict, progress: bool) -> list[dict]:
    # one procedure read top to bottom (data, model, routed LoRA, training loop, atomic saves); kept whole because
    # its steps share the training state
    from transformers import AutoModelForCausalLM

    examples = [training_examples(o, specs, base, recipe, progress) for o in orgs]
    r = PlantRecipe.of(recipe)
    G, steps, bs = len(orgs), r.steps, r.batch_size
    path, _ = checkpoint_dir(base_name)
    device_type = "cuda" if base.device.type == "cuda" else "cpu"
    autocast = r.bf16_autocast and (device_type == "cuda" or base.dtype == torch.bfloat16)
    # Under bf16 autocast the frozen base weights are cast to bf16 at every matmul anyway: hold them in bf16 (half
    # the memory traffic). The LoRA factors and their optimizer state stay fp32. Eager attention on CPU: at these
    # lengths the CPU flash-attention backward is mostly overhead (a step ~8% faster).
    attn = "eager" if device_type == "cpu" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if autocast else torch.float32,
                                                 local_files_only=True, attn_implementation=attn)
    fmt = adapter_format(recipe, base)
    layers = multilora.wrap(model, fmt.targets, G, fmt.rank, fmt.alpha)
    for g, o in enumerate(orgs):
        multilora.init_organism(layers, g, o.seed)
    model.to(base.device)  # after wrapping: the organisms' LoRA factors move with the base weights
    params = [p for lora in layers.values() for p in (lora.A, lora.B)]
    opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, steps=steps, decay=r.lr_decay))
    losses: list[list[float]] = [[] for _ in orgs]
    t0 = time.time()
    model.train()
    names = orgs[0].name if G == 1 else f"{G} organisms"
    bar = tqdm(range(steps), desc=f"plant {names}", disable=not progress, leave=False)
    for step in bar:
        batch = [e for ex in examples for e in ex[step * bs : (step + 1) * bs]]
        group = torch.tensor([g for g, ex in enumerate(examples) for _ in ex[step * bs : (step + 1) * bs]], device=base.device)
        input_ids, labels, mask = (t.to(base.device) for t in _encode(base.tokenizer, batch, r.max_length))
        with multilora.routing(layers, group), torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            per_org = multilora.grouped_response_loss(model, input_ids, mask, labels, group, G, r.first_token_weight,
                                                      reduce=False)
        per_org.sum().backward()
        multilora.clip_per_organism(layers, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        for g, x in enumerate(per_org.detach().tolist()):
            losses[g].append(x)
        bar.set_postfix(loss=f"{sum(lst[-1] for lst in losses) / G:.3f}")
    seconds = time.time() - t0
    logs = []
    for g, (o, out) in enumerate(zip(orgs, outs)):
        if not _finite_losses(losses[g]):
            raise FloatingPointError(f"planting {o.name}: the training loss became non-finite ({losses[g][-5:]}); lower "
                                     "plant.lr or check the training data")
        log = {"losses": losses[g], "seconds": seconds / G, "group_seconds": seconds, "group_size": G,
               "n_examples": len(examples[g]), "key": out.name.rsplit("-", 1)[-1], "sample": [list(e) for e in examples[g][:4]]}
        with atomic_dir(out) as tmp:
            multilora.save_peft_adapter(tmp, multilora.organism_state(layers, g, fmt.dtype), fmt)
            log["sha256"] = sha256_file(tmp / "adapter_model.safetensors")  # verified on every cache hit
            write_json(tmp / "train_log.json", log)
        logs.append(log)
    return logs


def _save_identical(base_name: str, base: LoadedModel, out: Path, recipe: dict) -> dict:
    """The null_identical organism: an untrained adapter (B = 0), so model B is exactly model A."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path, _ = checkpoint_dir(base_name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
    fmt = adapter_format(recipe, base)
    layers = multilora.wrap(model, fmt.targets, 1, fmt.rank, fmt.alpha)
    state = {k: torch.zeros(v.shape, dtype=fmt.dtype) for k, v in multilora.organism_state(layers, 0, fmt.dtype).items()}
    log = {"losses": [0.0], "seconds": 0.0, "group_seconds": 0.0, "group_size": 1, "n_examples": 0, "key": out.name.rsplit("-", 1)[-1],
           "sample": []}
    with atomic_dir(out) as tmp:
        multilora.save_peft_adapter(tmp, state, fmt)
        log["sha256"] = sha256_file(tmp / "adapter_model.safetensors")
        write_json(tmp / "train_log.json", log)
    return log


def adapter_format(recipe: dict, base: LoadedModel) -> multilora.AdapterFormat:
    r = PlantRecipe.of(recipe)
    return multilora.AdapterFormat(r.rank, float(r.alpha), tuple(r.targets or base.family.lora_targets), getattr(torch, r.storage_dtype))


