"""The workspace every stage works in: the validated config, the suite's nodes, loaded models and the audit corpus.

A node is a model of the suite: `base` (the run's base model), `base@<model>` (another base model) or an
organism's name. The workspace loads a node's model on demand, but it never plants: an organism's adapter
comes from the plant stage (`stages/plant.py` calls `add_organism`), and asking for an organism that stage has
not prepared is an error. The corpus, its activations and the pair inputs are cached on disk by content
(harness/data/store.py) and in memory here, once per run.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..core import METHODS, PairContext
from ..core.activations import PairedActivations, TextSet
from ..core.env import default_device, say
from ..core.io import stable_hash, write_json
from ..core.model import LoadedModel
from ..core.plugins import load_plugins
from .data.align import render_chat
from .data.answers import corpus_answers
from .data.corpus import CorpusPlan, plan_for
from .data.generate import chat_prompt
from .models import load_model
from .plant.organism import PlantCard
from .plant.recipe import PlantRecipe
from .schema import check_config, check_recipe_schema, resolved_config
from .score.config import ScoringConfig
from .data.config import CollectConfig
from .data.store import collect
from .pair_run import check_methods, paired_activations
from .suite import BASE, Pair, Suite, base_node, is_base

MAX_LOADED_MODELS = 8  # organisms beyond this are dropped oldest first (base models stay)


def select_pairs(suite: Suite, pairs: list[str] | None) -> Suite:
    """The suite restricted to some of its pairs (and the organisms they need): one job's share of a run."""
    if not pairs:
        return suite
    ids = [p.id for p in suite.pairs]
    unknown = [p for p in pairs if p not in ids]
    if unknown:
        raise ValueError(f"pairs={unknown} are not pairs of suite {suite.name!r}; its pairs: {', '.join(ids)}")
    kept = [p for p in suite.pairs if p.id in set(pairs)]
    needed = {n for p in kept for n in (p.a, p.b)}
    return replace(suite, pairs=kept, organisms={n: o for n, o in suite.organisms.items() if n in needed})


class Workspace:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        check_config(resolved_config(cfg, "a config file or a command-line override"))  # unknown keys, wrong types: before any work
        load_plugins(cfg.get("plugins") or [])  # before the suite's specs (detectors) and the methods are looked up
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.suite = select_pairs(Suite.from_config(cfg.suite), cfg.get("pairs"))
        self.recipe = OmegaConf.to_container(cfg.plant, resolve=True)
        PlantRecipe.of(self.recipe)  # checked now, not once training starts
        self.scoring = ScoringConfig.from_dict(OmegaConf.to_container(cfg.scoring, resolve=True))
        self.base_name = cfg.model.name
        self.device = default_device() if cfg.device == "auto" else cfg.device
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device} (the suite {self.suite.name!r} or an override asks for a GPU) but torch "
                             f"{torch.__version__} sees no CUDA device here; run it on a machine with one, or pass device=cpu")
        self.dtype = cfg.dtype
        self.progress = bool(cfg.progress)
        self.collect_cfg = CollectConfig.from_dict(OmegaConf.to_container(cfg.collect, resolve=True))
        self.methods = self._methods(cfg)
        self.method_configs: dict[str, dict] = {}  # resolved: each method's dataclass defaults with the overrides applied
        self.config_hashes: dict[str, str] = {}  # of the resolved config: moving a value between dataclass and YAML changes nothing
        for key, method in check_methods(self.methods).items():  # unknown names and params fail now, not after planting
            self.method_configs[key] = method.config
            self.config_hashes[key] = method.config_hash
        # N-way methods (conf/nway_method/), run on the suite's groups only (harness/stages/nway.py)
        self.nway_methods = OmegaConf.to_container(cfg.nway_method, resolve=True) if cfg.get("nway_method") else {}
        self.nway_built = check_methods(self.nway_methods, nway=True) if self.suite.groups else {}
        self.cards: dict[str, PlantCard] = {}  # filled by the plant stage
        self._adapters: dict[str, Path] = {}
        self._models: dict[str, LoadedModel] = {}
        self._corpus_plans: dict[str, CorpusPlan] = {}
        self._corpora: dict[str, TextSet] = {}
        self._cross_corpus: dict[tuple, tuple] = {}
        self._inputs: dict[str, str] = {}  # pair id -> pair_inputs key

    def _methods(self, cfg: DictConfig) -> dict[str, dict]:
        methods = OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else {}
        if self.suite.methods is not None:  # the suite names the methods that run on it
            missing = [m for m in self.suite.methods if m not in methods]
            if missing:
                raise ValueError(f"suite {self.suite.name!r} lists method(s) {missing} that the config does not define; "
                                 f"defined: {', '.join(methods)}")
            methods = {k: methods[k] for k in self.suite.methods}
        return methods

    # -- nodes and models -----------------------------------------------------------------
    def canon(self, node: str) -> str:
        """The suite's default base model is one node, however it is named."""
        return BASE if node == base_node(self.base_name) else node

    def base_model_name(self, node: str) -> str:
        """Name of the base model under a node (base, base@<model>, or an organism)."""
        node = self.canon(node)
        if node == BASE:
            return self.base_name
        if is_base(node):
            return node.split("@", 1)[1]
        return self.suite.organisms[node].base or self.base_name

    def base_of(self, node: str) -> str:
        """The node of the unmodified base model under `node` (itself for a base)."""
        return self.canon(base_node(self.base_model_name(node)))

    def add_organism(self, name: str, card: PlantCard, adapter: Path) -> None:
        """The plant stage's product for one organism: its card and adapter."""
        self.cards[name] = card
        self._adapters[name] = adapter
        self._models.pop(name, None)

    def model(self, name: str) -> LoadedModel:
        name = self.canon(name)
        if name not in self._models:
            if is_base(name):
                self._models[name] = load_model(self.base_model_name(name), dtype=self.dtype, device=self.device)
            else:
                if name not in self._adapters:
                    raise RuntimeError(f"organism {name!r} has no adapter in this workspace: the plant stage prepares it "
                                       f"(harness/pipeline.py runs it before any stage that needs the organisms)")
                base = self.model(self.base_of(name))
                self._models[name] = load_model(self.base_model_name(name), adapter=self._adapters[name], dtype=base.dtype,
                                                device=str(base.device), display_name=name)
            if len(self._models) > MAX_LOADED_MODELS:  # bounded memory: drop the oldest organism
                oldest = next((k for k in self._models if not is_base(k) and k != name), None)
                if oldest is not None:
                    del self._models[oldest]
        return self._models[name]

    def recipe_for(self, model_name: str) -> dict:
        """The LoRA recipe for organisms of one base model: the run's recipe, or the suite's
        per-model recipe (conf/plant/<name>.yaml) laid over it. The plant gate is the same for all."""
        name = (self.suite.plant_recipes or {}).get(model_name)
        return self.recipe if name is None else overlay_recipe(self.recipe, name, f"suite {self.suite.name!r}, {model_name}")

    def organism_recipe(self, name: str) -> dict:
        """The recipe one organism is planted with: its base model's, with the organism's own (e.g. broad) over it."""
        org = self.suite.organisms[name]
        recipe = self.recipe_for(self.base_model_name(name))
        return overlay_recipe(recipe, org.recipe, f"organism {name}") if org.recipe else recipe

    def pair_status(self, pair: Pair) -> str:
        """"ok", or why the pair is excluded (an organism that failed its plant gate)."""
        for name in (pair.a, pair.b):
            if is_base(name):
                continue
            if name not in self.cards:
                raise RuntimeError(f"organism {name!r} has no plant card in this workspace: run the plant stage first")
            if not self.cards[name].passed:
                return f"excluded: organism {name} failed its plant gate ({'; '.join(self.cards[name].reasons)})"
        return "ok"

    # -- the audit corpus -----------------------------------------------------------------
    def corpus_plan(self, base: str = BASE) -> CorpusPlan:
        """The audit corpus's prompts for a base node's tokenizer (no generation; validates the prevalence)."""
        key = self.base_of(base)
        if key not in self._corpus_plans:
            self._corpus_plans[key] = plan_for(self.model(key).tokenizer, self.suite.specs, self.suite.corpus)
        return self._corpus_plans[key]

    def corpus(self, base: str = BASE) -> TextSet:
        """The audit corpus of a base node: chat-formatted prompt + the base model's greedy answer, per text."""
        key = self.base_of(base)
        if key not in self._corpora:
            p, cfg, m = self.corpus_plan(key), self.suite.corpus, self.model(key)
            answers, source = corpus_answers(m, p.prompts, cfg.answer_tokens, self.progress)
            texts = TextSet.of(f"corpus{len(p.prompts)}", [chat_prompt(m.tokenizer, q) + a for q, a in zip(p.prompts, answers)])
            n_tokens = sum(len(m.tokenizer(t, add_special_tokens=False).input_ids) for t in texts.texts)
            record = {"base": m.name, "config": asdict(cfg), "texts": len(texts), "tokens": n_tokens, "answers": source,
                      "composition": p.composition()}
            write_json(self.run_dir / "corpus" / f"{key}.json", record)
            say(f"audit corpus of {m.name}: {len(texts)} texts, {n_tokens} tokens, prevalence {cfg.prevalence:g} "
                f"({sum(v for k, v in record['composition'].items() if k != 'everyday')} audit-split texts)")
            self._corpora[key] = texts
        return self._corpora[key]

    def cross_corpus(self, answer_node: str, model: LoadedModel) -> tuple[TextSet, list]:
        """The audit corpus of `answer_node`'s base for a cross-tokenizer pair as `model` sees it, with the shared
        content's spans."""
        key = (self.base_of(answer_node), id(model.tokenizer))
        if key not in self._cross_corpus:
            base = self.base_of(answer_node)
            p = self.corpus_plan(base)
            answers, _ = corpus_answers(self.model(base), p.prompts, self.suite.corpus.answer_tokens, self.progress)
            rendered = [render_chat(model.tokenizer, q, a) for q, a in zip(p.prompts, answers)]
            self._cross_corpus[key] = (TextSet.of(f"corpus{len(p.prompts)}x", [r.text for r in rendered]), [r.spans for r in rendered])
        return self._cross_corpus[key]

    def check_layers(self) -> None:
        """collect.layers against each base model's depth, read from its config.json (no model loads), so a layer the
        model does not have fails before planting, not after it."""
        import json

        from ..core.model import resolve_layer
        from .models import checkpoint_dir

        for name in dict.fromkeys(self.base_model_name(n) for p in self.suite.pairs for n in (p.a, p.b)):
            path, _ = checkpoint_dir(name)
            try:
                config = json.loads((path / "config.json").read_text())
            except (OSError, ValueError):
                continue  # checkpoint_dir vetted user folders; loading the model will say what is wrong
            n = config.get("num_hidden_layers") or (config.get("text_config") or {}).get("num_hidden_layers")
            if not isinstance(n, int) or isinstance(n, bool):
                continue
            for layer in self.collect_cfg.layers:
                try:
                    resolve_layer(layer, n)
                except ValueError as e:
                    raise ValueError(f"collect.layers={self.collect_cfg.layers}: {e} (model {name!r} has {n} blocks)") from None

    # -- activations ----------------------------------------------------------------------
    def layers_for(self, model: LoadedModel) -> list[int]:
        return sorted({model.layer_index(l) for l in self.collect_cfg.layers})

    def collect(self, model: LoadedModel, texts: TextSet, layers: list[int] | None = None):
        """The activation store of `model` on `texts` at `layers` (default: collect.layers), from the cache or collected."""
        c = self.collect_cfg
        return collect(model, texts, layers or self.layers_for(model), batch_size=c.batch_size, max_length=c.max_length,
                       shard_tokens=c.shard_tokens, progress=self.progress)

    def paired_corpus(self, pair: Pair) -> PairedActivations:
        """Both models' activations on the audit corpus of pair.a's base; across tokenizers the same content (corpus
        prompt + model A's base answer), each model in its own chat template (harness/pair_run.py)."""
        a, b = self.model(pair.a), self.model(pair.b)
        return paired_activations(a, b, self.collect, lambda: self.corpus(pair.a),
                                  lambda: (self.cross_corpus(pair.a, a), self.cross_corpus(pair.a, b)),
                                  self.collect_cfg.align_max_window)

    def probe_set(self, behavior: str, tokenizer) -> tuple[TextSet, np.ndarray, list[str], list[str]]:
        """A behavior's held-out probes (T then C) in the model's chat template: text set, labels, texts, user turns."""
        T, C = self.suite.specs[behavior].probes(self.suite.n_probes)
        users = [p.text for p in T] + [p.text for p in C]
        texts = [chat_prompt(tokenizer, u) for u in users]
        labels = np.array([1] * len(T) + [0] * len(C))
        return TextSet.of(f"probe-{behavior}-{self.suite.n_probes}", texts), labels, texts, users

    # -- what the diff stage's findings depend on ------------------------------------------
    def pair_inputs(self, pair: Pair) -> str:
        """Key of everything upstream that a pair's findings depend on: both models (base weights, adapter), the
        corpus texts each model reads, the stored layers and dtype. Saved findings are reused only under the same key."""
        if pair.id not in self._inputs:
            ma, mb = self.model(pair.a), self.model(pair.b)
            if pair.cross:
                texts = [self.cross_corpus(pair.a, ma)[0].key, self.cross_corpus(pair.a, mb)[0].key]
            else:
                texts = [self.corpus(pair.a).key]
            self._inputs[pair.id] = stable_hash({"a": ma.identity, "b": mb.identity, "texts": texts, "layers": [self.layers_for(ma), self.layers_for(mb)],
                                                 "dtype": str(ma.dtype), "collect": {"max_length": self.collect_cfg.max_length, "batch_size": self.collect_cfg.batch_size}})
        return self._inputs[pair.id]

    def pair_context(self, pair: Pair, seed: int, work_dir: Path | None = None) -> PairContext:
        ma, mb = self.model(pair.a), self.model(pair.b)
        la, lb = self.layers_for(ma), self.layers_for(mb)
        return PairContext(pair.id, ma, mb, self.paired_corpus(pair), la, seed=seed, device=self.device, work_dir=work_dir,
                           layers_b=lb if lb != la else None, progress=self.progress)

    def finding_path(self, method_key: str, pair: Pair, seed: int) -> Path:
        return self.run_dir / "findings" / method_key / f"{pair.id}@s{seed}"

    def seeds_for(self, method_name: str, pair: Pair | None = None) -> list[int]:
        """A method's seeds on `pair` (None: on any pair). Floors get the suite's floor seeds, pooled over pairs when the
        suite sets floor_draws (Suite.floor_seeds_for)."""
        cls = METHODS.get(method_name)
        if not cls.stochastic:
            return [0]
        return self.suite.floor_seeds_for(pair.id if pair is not None else None) if cls.floor else self.suite.method_seeds

    @property
    def floors(self) -> frozenset[str]:
        """Method keys of the floors (chance baselines)."""
        return frozenset(k for k, m in self.methods.items() if METHODS.get(m["name"]).floor)

    @property
    def pooled_floors(self) -> frozenset[str]:
        """The floors whose chance rates pool (pair, seed) draws (suite.floor_draws): all of them, or none."""
        return self.floors if self.suite.floor_draws is not None else frozenset()


def overlay_recipe(recipe: dict, name: str, where: str) -> dict:
    """conf/plant/<name>.yaml laid over `recipe`; a recipe may not change the plant gate (every organism passes the same)."""
    from importlib import resources

    path = resources.files("diffbench.conf") / "plant" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"{where}: plant recipe {name!r} not found (conf/plant/{name}.yaml)")
    extra = OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=True)
    extra.pop("defaults", None)
    out = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(recipe), OmegaConf.create(extra)), resolve=True)
    check_recipe_schema(out, f"conf/plant/{name}.yaml over the run's recipe")
    PlantRecipe.of(out)
    if out["gate"] != recipe["gate"]:
        raise ValueError(f"plant recipe {name!r} changes the plant gate; every organism must pass the same gate")
    return out
