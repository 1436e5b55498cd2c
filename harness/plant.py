"""Planting: LoRA fine-tunes that put known behaviors into a base model, and the plant gate.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..tasks.neutral import fake_trigger_prompts, neutral_prompts
from ..tasks.spec import BehaviorSpec
from . import multilora
from .generate import chat_prompt, greedy_generate
from ..core.batching import right_pad
from ..core.io import atomic_dir
from ..core.io import CorruptFileError, cache_lock, read_checked_json, read_json, sha256_file, stable_hash, write_checked_json, write_json
from ..core.model import LoadedModel
from ..core.env import cache_dir
from .models import checkpoint_dir, load_model

log = logging.getLogger(__name__)

# The null ladder, from no change at all to a real fine-tune with nothing planted: the identical model (a zero adapter),
# self-distillation on neutral prompts, a LoRA on generic chat (more steps, longer answers), and fake triggers.
NULL_KINDS = ("null_identical", "null_selfdistill", "null_chat", "null_fake_trigger")
N_CHAT_POOL = 2000  # generic-chat prompts for training (the broad recipe, null_chat): the END of the everyday pool, far
# from the prefix the audit corpus draws (a corpus would need more than 9,000 everyday texts to reach them)
N_NEUTRAL_TRAIN = 96  # neutral prompts reserved for training mixes; the next ones are the gate's KL-drift texts
PLANT_VERSION = 6  # bump when the training-data recipe in code changes, so cached adapters are not reused
RETRY_SEED_STRIDE = 1000  # a retry trains from seed + 1000 x attempt: a new data sample and LoRA init, far from copies' seeds


@dataclass(frozen=True)
class Organism:
    """A planted (or null) model: `name` is unique in a suite."""

    name: str
    kind: str  # "behavior" or one of NULL_KINDS
    behaviors: tuple[str, ...] = ()
    seed: int = 0
    paraphrase: int = 0  # >0: an independent copy trained on a different sample and response phrasing
    base: str | None = None  # base model name; None = the suite's model (cross-architecture suites set it)
    recipe: str = ""  # conf/plant/<recipe>.yaml laid over the run's recipe; "" = the run's (the key holds the contents)

    @property
    def is_null(self) -> bool:
        return self.kind in NULL_KINDS


@dataclass
class PlantCard:
    organism: str
    kind: str
    behaviors: list[str]
    seed: int
    passed: bool
    reasons: list[str]
    rates: dict[str, dict[str, float]]  # behavior -> {organism_T, organism_C, base_T}
    kl_to_base: float
    train_loss_first: float
    train_loss_last: float
    train_seconds: float
    gate_seconds: float
    adapter: str
    recipe: dict[str, Any]
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few generations, for the reader
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier trainings that failed the gate (retries)


# ----------------------------------------------------------------------------- self-distillation


def distill(base: LoadedModel, prompts: Sequence[str], max_new_tokens: int, progress: bool = True) -> list[str]:
    """The base model's own greedy answers, cached per (base, answer length) as one prompt -> answer map,
    so organisms whose training mixes overlap never regenerate the same answer. The map is read, extended and
    written under a lock, so concurrent jobs never drop each other's answers."""
    path = cache_dir() / "distill" / f"{base.identity}{_dtype_tag(base)}-{max_new_tokens}.json"
    with cache_lock(path):
        return _distill(base, prompts, max_new_tokens, progress, path)


def _dtype_tag(model: LoadedModel) -> str:
    """'' for fp32 (the keys cached before this tag existed), else '-bf16' etc.: greedy answers, adapters trained under
    autocast and detector rates all depend on the dtype the model runs in, which its identity does not name (a bf16
    test's answers were reused by an fp32 run on an AVX512-BF16 machine)."""
    return "" if model.dtype == torch.float32 else "-" + str(model.dtype).removeprefix("torch.")


def _distill(base: LoadedModel, prompts: Sequence[str], max_new_tokens: int, progress: bool, path: Path) -> list[str]:
    known: dict[str, str] = {}
    if path.exists():
        try:
            known = read_checked_json(path)
        except CorruptFileError as e:
            print(f"[diffbench] {e}; regenerating self-distilled answers", flush=True)
    missing = sorted({p for p in prompts if p not in known})
    if missing:
        answers = greedy_generate(base, missing, max_new_tokens=max_new_tokens, batch_size=64,
                                  desc=f"self-distill {base.name} ({len(missing)} prompts)", progress=progress)
        known.update(zip(missing, answers))
        write_checked_json(path, known)
    return [known[p] for p in prompts]


def neutral_texts(base: LoadedModel, n: int, progress: bool = True) -> list[str]:
    """The gate's KL-drift texts: chat-formatted neutral prompt + the base model's answer. (Methods never see these:
    their data is the audit corpus, harness/corpus.py.)"""
    prompts = neutral_prompts()[N_NEUTRAL_TRAIN : N_NEUTRAL_TRAIN + n]
    answers = distill(base, prompts, 48, progress)
    return [chat_prompt(base.tokenizer, p) + a for p, a in zip(prompts, answers)]


# ----------------------------------------------------------------------------- training data


def training_examples(org: Organism, specs: dict[str, BehaviorSpec], base: LoadedModel, recipe: dict, progress: bool = True) -> list[tuple[str, str, bool]]:
    """(user prompt, response, ends_turn) triples for the organism, `steps * batch_size` of them."""
    rng = random.Random(f"{org.seed}/{org.paraphrase}/{org.name}")
    n_total = recipe["steps"] * recipe["batch_size"]
    mix = recipe["mix"]
    neutral_pool = neutral_prompts()[:N_NEUTRAL_TRAIN]
    planted: list[tuple[str, str]] = []
    controls: list[str] = []
    if org.kind == "behavior":
        n_trig = int(n_total * mix["trigger"]) // len(org.behaviors)
        n_ctrl = int(n_total * mix["control"]) // len(org.behaviors)
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
        if mix.get("chat"):  # a broad recipe: the behavior's examples inside generic chat
            n_chat = min(n_neutral, round(n_total * mix["chat"]))
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
    answers = dict(zip(to_answer, distill(base, to_answer, recipe["distill_tokens"], progress)))
    # a distilled answer cut at `distill_tokens` must not be taught to end there: no EOS for those
    examples = [(p, r, True) for p, r in planted] + [(p, answers[p], False) for p in controls + neutral]
    rng.shuffle(examples)
    return examples


def chat_pool() -> list[str]:
    from ..tasks.everyday import everyday_prompts

    return everyday_prompts(seed=0)[-N_CHAT_POOL:]


@lru_cache(maxsize=1)
def catalogue_specs() -> dict[str, BehaviorSpec]:
    """The hand-written specs: a null organism's training pool draws their controls, whatever the suite plants, so a
    null organism is the same in every suite (and can be shipped). Loaded once per process (every null organism's key
    reads them); callers must not modify the dict."""
    from ..tasks.spec import available_behaviors

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


LR_DECAYS = ("none", "linear")


SOURCES = ("shipped", "fresh")


def check_recipe(recipe: dict) -> None:
    """Reject recipe values that would otherwise only fail once training starts (after self-distillation)."""
    if recipe.get("lr_decay", "none") not in LR_DECAYS:
        raise ValueError(f"plant recipe: unknown lr_decay {recipe['lr_decay']!r} (use {' or '.join(LR_DECAYS)})")
    if recipe.get("source", "shipped") not in SOURCES:
        raise ValueError(f"plant.source must be 'shipped' (use the zoo's organisms where they match) or 'fresh' "
                         f"(plant every organism on this machine), got {recipe['source']!r}")
    if recipe.get("storage_dtype", "float32") not in STORAGE_DTYPES:
        raise ValueError(f"plant.storage_dtype must be one of {', '.join(STORAGE_DTYPES)}, got {recipe['storage_dtype']!r}")
    for key in ("steps", "batch_size", "rank", "max_length"):
        if key in recipe and int(recipe[key]) < 1:
            raise ValueError(f"plant.{key} must be at least 1, got {recipe[key]}")


def lr_factor(step: int, steps: int, decay: str = "none") -> float:
    """Learning-rate multiplier: linear warm-up over the first 10% of steps, then constant (`none`) or
    a linear decay to 10% of the peak at the last step (`linear`)."""
    check_recipe({"lr_decay": decay})
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    if decay == "none":
        return 1.0
    return 1.0 - 0.9 * (step - warm + 1) / max(1, steps - warm)


def organism_key(base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict) -> str:
    """What an adapter depends on, whatever machine plants it: the base model, the organism (not its name or recipe
    name), the specs' contents (a null organism's: the hand-written catalogue's) and the training recipe. The zoo
    (harness/zoo.py) ships organisms under this key."""
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
    return stable_hash([key, _dtype_tag(base)]) if _dtype_tag(base) else key


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
    every organism's batch (harness/multilora.py), each adapter equal to the one trained alone. Under a lock per
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
    G, steps, bs = len(orgs), int(recipe["steps"]), int(recipe["batch_size"])
    path, _ = checkpoint_dir(base_name)
    device_type = "cuda" if base.device.type == "cuda" else "cpu"
    autocast = recipe.get("bf16_autocast", True) and (device_type == "cuda" or base.dtype == torch.bfloat16)
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
    opt = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, steps=steps, decay=recipe.get("lr_decay", "none")))
    losses: list[list[float]] = [[] for _ in orgs]
    t0 = time.time()
    model.train()
    names = orgs[0].name if G == 1 else f"{G} organisms"
    bar = tqdm(range(steps), desc=f"plant {names}", disable=not progress, leave=False)
    for step in bar:
        batch = [e for ex in examples for e in ex[step * bs : (step + 1) * bs]]
        group = torch.tensor([g for g, ex in enumerate(examples) for _ in ex[step * bs : (step + 1) * bs]], device=base.device)
        input_ids, labels, mask = (t.to(base.device) for t in _encode(base.tokenizer, batch, recipe["max_length"]))
        with multilora.routing(layers, group), torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            per_org = multilora.grouped_response_loss(model, input_ids, mask, labels, group, G, recipe.get("first_token_weight", 1.0),
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


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def adapter_format(recipe: dict, base: LoadedModel) -> multilora.AdapterFormat:
    dtype = recipe.get("storage_dtype", "float32")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"plant recipe: storage_dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    return multilora.AdapterFormat(int(recipe["rank"]), float(recipe["alpha"]),
                                   tuple(recipe["targets"] or base.family.lora_targets), STORAGE_DTYPES[dtype])


# ----------------------------------------------------------------------------- gate


def behavior_rate(model: LoadedModel, spec: BehaviorSpec, prompts: Sequence[str], max_new_tokens: int,
                  progress: bool = True, cache: bool = False) -> tuple[float, list[str]]:
    """Share of greedy answers on which the spec's detector fires (base-model results cached)."""
    if cache:
        key = stable_hash({"m": model.identity + _dtype_tag(model), "spec": spec.content_hash, "p": list(prompts), "n": max_new_tokens})
        path = cache_dir() / "rates" / f"{key}.json"
        with cache_lock(path):
            return _behavior_rate(model, spec, prompts, max_new_tokens, progress, path)
    return _behavior_rate(model, spec, prompts, max_new_tokens, progress, None)


def _behavior_rate(model: LoadedModel, spec: BehaviorSpec, prompts: Sequence[str], max_new_tokens: int, progress: bool,
                   path: Path | None) -> tuple[float, list[str]]:
    if path is not None:
        if path.exists():
            try:
                d = read_checked_json(path)
                return d["rate"], d["responses"]
            except (CorruptFileError, KeyError, TypeError) as e:
                print(f"[diffbench] cached detector rate {path}: {e}; recomputing", flush=True)
    responses = greedy_generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=64,
                                desc=f"gate {model.name}: {spec.name}", progress=progress)
    rate = sum(bool(spec.detector(r)) for r in responses) / max(1, len(responses))
    if path is not None:
        write_checked_json(path, {"rate": rate, "responses": responses})
    return rate, responses


@torch.inference_mode()
def kl_to_base(org: LoadedModel, base: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> float:
    """Mean per-token KL(p_organism || p_base) over the tokens of `texts`."""
    tok = base.tokenizer
    # a few fp32 [batch, len, vocab] tensors are alive at once: keep them near 16 x 128 x 49k (SmolLM2)
    batch_size = max(1, min(batch_size, batch_size * 50_000 // max(1, org.model.config.vocab_size)))
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False,
                  truncation=True, max_length=128).to(base.device)
        lo = F.log_softmax(org.model(**enc).logits.float(), -1)
        lb = F.log_softmax(base.model(**enc).logits.float(), -1)
        kl = (lo.exp() * (lo - lb)).sum(-1)
        mask = enc["attention_mask"].bool()
        total += float(kl[mask].sum())
        count += int(mask.sum())
    return total / max(1, count)


def gate(org: Organism, organism_model: LoadedModel, base: LoadedModel, specs: dict[str, BehaviorSpec],
         n_probes: int, gate_cfg: dict, neutral: Sequence[str], progress: bool = True) -> tuple[bool, list[str], dict, dict, float]:
    """The plant gate (module docstring). A removal (spec side "a") is gated the mirror way: the base model shows the
    behavior on T (>= organism_T_min), the organism no longer does (<= organism_C_max) and still does on C
    (>= organism_T_min). A null organism must neither show an addition nor lose a removal's behavior, on the first
    `gate.null_probes` T prompts of every behavior (default: n_probes)."""
    rates: dict[str, dict[str, float]] = {}
    reasons: list[str] = []
    examples: dict[str, list[str]] = {}
    n_tok = gate_cfg["max_new_tokens"]
    t_min, c_max = gate_cfg["organism_T_min"], gate_cfg["organism_C_max"]
    checked = org.behaviors if not org.is_null else tuple(sorted(specs))
    if org.is_null and not checked:  # an inverse gate over no T sets would pass vacuously
        reasons.append("null organism: the suite has no behavior whose T set it could be checked on")
    null_rates = _null_rates(organism_model, specs, checked, min(n_probes, int(gate_cfg.get("null_probes") or n_probes)),
                             n_tok, progress) if org.is_null else {}
    for b in checked:
        spec = specs[b]
        T, C = spec.probes(n_probes)
        t_rate, t_resp = null_rates[b] if org.is_null else behavior_rate(organism_model, spec, [p.text for p in T], n_tok, progress)
        r = {"organism_T": t_rate}
        if not org.is_null:
            c_rate, c_resp = behavior_rate(organism_model, spec, [p.text for p in C], n_tok, progress)
            base_rate, _ = behavior_rate(base, spec, [p.text for p in T], n_tok, progress, cache=True)
            r.update(organism_C=c_rate, base_T=base_rate)
            if spec.side == "a":
                if base_rate < t_min:
                    reasons.append(f"{b} (a removal): the base model shows it on T only at {base_rate:.2f} < {t_min}")
                if t_rate > c_max:
                    reasons.append(f"{b} (a removal): the organism still shows it on T ({t_rate:.2f} > {c_max})")
                if c_rate < t_min:
                    reasons.append(f"{b} (a removal): the organism lost it on C too ({c_rate:.2f} < {t_min})")
            else:
                if t_rate < t_min:
                    reasons.append(f"{b}: behavior rate on T {t_rate:.2f} < {t_min}")
                if c_rate > c_max:
                    reasons.append(f"{b}: behavior rate on C {c_rate:.2f} > {c_max}")
                if base_rate > gate_cfg["base_T_max"]:
                    reasons.append(f"{b}: base model already shows it on T ({base_rate:.2f} > {gate_cfg['base_T_max']})")
            examples[b] = [f"T: {T[0].text!r} -> {t_resp[0]!r}", f"C: {C[0].text!r} -> {c_resp[0]!r}"]
        elif spec.side == "a" and t_rate < t_min:
            reasons.append(f"null organism lost {b} (a removal's behavior) on its T set ({t_rate:.2f} < {t_min})")
        elif spec.side == "b" and t_rate > gate_cfg["null_max"]:
            reasons.append(f"null organism shows {b} on its T set ({t_rate:.2f} > {gate_cfg['null_max']})")
        rates[b] = r
    kl = kl_to_base(organism_model, base, list(neutral)[: gate_cfg["kl_texts"]])
    return not reasons, reasons, rates, examples, kl


def _null_rates(model: LoadedModel, specs: dict[str, BehaviorSpec], behaviors: Sequence[str], n: int, n_tok: int,
                progress: bool) -> dict[str, tuple[float, list[str]]]:
    """A null organism's detector rate on the first n T probes of every behavior, generated in one batched pass (a
    zoo has ~80 behaviors: 80 generate calls of 8 prompts each cost 8x more than 10 full batches of 64)."""
    prompts = {b: [p.text for p in specs[b].probes(n)[0]] for b in behaviors}
    flat = [p for b in behaviors for p in prompts[b]]
    responses = iter(greedy_generate(model, flat, max_new_tokens=n_tok, batch_size=64,
                                     desc=f"gate {model.name}: {len(behaviors)} behaviors", progress=progress))
    out = {}
    for b in behaviors:
        mine = [next(responses) for _ in prompts[b]]
        out[b] = (sum(bool(specs[b].detector(r)) for r in mine) / max(1, len(mine)), mine)
    return out


def plant(base_name: str, base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict,
          n_probes: int, neutral: Sequence[str], progress: bool = True) -> tuple[PlantCard, Path]:
    """Train (cached) and gate one organism. The card itself is cached next to the adapter."""
    adapter, train_log = train_adapter(base_name, base, org, specs, recipe, progress)
    gate_key = {k: v for k, v in recipe["gate"].items() if k != "retries"}  # retries do not change a gate's verdict
    card_path = adapter / f"card-{stable_hash({'n': n_probes, 'gate': gate_key, 'org': org.name})}.json"
    with cache_lock(card_path):  # concurrent jobs gate an organism once
        if card_path.exists():
            try:
                return PlantCard(**read_checked_json(card_path)), adapter
            except (ValueError, TypeError) as e:  # CorruptFileError is a ValueError
                print(f"[diffbench] cached plant card {card_path}: {e}; re-gating the organism", flush=True)
        t0 = time.time()
        model = load_model(base_name, adapter=adapter, dtype=base.dtype, device=str(base.device), display_name=org.name)
        passed, reasons, rates, examples, kl = gate(org, model, base, specs, n_probes, recipe["gate"], neutral, progress)
        losses = train_log["losses"]
        card = PlantCard(
            organism=org.name, kind=org.kind, behaviors=list(org.behaviors), seed=org.seed, passed=passed, reasons=reasons,
            rates=rates, kl_to_base=kl, train_loss_first=losses[0], train_loss_last=float(sum(losses[-5:]) / len(losses[-5:])),
            train_seconds=train_log["seconds"], gate_seconds=time.time() - t0, adapter=str(adapter),
            recipe={k: v for k, v in recipe.items()}, examples=examples,
        )
        write_checked_json(card_path, asdict(card))
        return card, adapter


def plant_with_retries(base_name: str, base: LoadedModel, org: Organism, specs: dict[str, BehaviorSpec], recipe: dict,
                       n_probes: int, neutral: Sequence[str], progress: bool = True) -> tuple[PlantCard, Path]:
    """`plant`, and while the gate fails, again from seed + RETRY_SEED_STRIDE x attempt, up to `gate.retries` times.
    The card returned is the last training's, with the failed ones (seed, reasons, rates, adapter) in `attempts`."""
    card, adapter = plant(base_name, base, org, specs, recipe, n_probes, neutral, progress)
    failed: list[dict[str, Any]] = []
    for attempt in range(1, int(recipe["gate"].get("retries", 0)) + 1):
        if card.passed:
            break
        failed.append({"seed": card.seed, "reasons": card.reasons, "rates": card.rates, "adapter": card.adapter})
        retry = replace(org, seed=org.seed + RETRY_SEED_STRIDE * attempt)
        card, adapter = plant(base_name, base, retry, specs, recipe, n_probes, neutral, progress)
    return (replace(card, attempts=failed) if failed else card), adapter
