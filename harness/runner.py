"""The pipeline: plant -> collect -> diff -> score -> report, each stage cached and resumable.

Every stage can run alone (`stages=[collect]`); a stage that needs an earlier
stage's products gets them from the caches (planting and collection are
content-addressed), and `score`/`report` read the run folder's saved findings.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..methods import load_all_methods
from ..core import METHODS, NotApplicableError, PairContext, load_findings, rank, save_findings, validate_findings
from .generate import chat_prompt
from ..core.io import read_json, sha256_file, stable_hash, stable_int, write_csv, write_json
from ..core.model import LoadedModel
from ..core.env import default_device
from .models import load_model
from .plant import PlantCard, check_recipe, distill, neutral_texts, plant
from ..tasks.everyday import everyday_prompts
from .calibration import TokenNull
from .corpus import CorpusPlan, catalogue, n_texts_for, plan
from ..core.plugins import load_plugins
from .schema import check_config, check_recipe_schema
from .snippets import attach_snippets
from .scoring import (Keywords, MatchRecord, PairResult, ProbeActs, ScoringConfig, compute_metrics, keywords_for, match_finding,
                      match_finding_one_side, probe_null)
from ..core.activations import PairedActivations, TextSet
from .store import collect, pair_stores
from .suite import BASE, Pair, Suite, base_node, is_base
from .tracking import Tracker

log = logging.getLogger(__name__)


def findings_digest(path: Path) -> str:
    return stable_hash([sha256_file(path.with_suffix(".json")), sha256_file(path.with_suffix(".safetensors"))])


STAGES = ("plant", "collect", "diff", "score", "report")


def say(msg: str) -> None:
    print(f"[diffbench] {msg}", flush=True)


class Runner:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        check_config(OmegaConf.to_container(cfg, resolve=True))  # unknown keys and wrong types: one error, before any work
        load_plugins(cfg.get("plugins") or [])  # before the suite's specs (detectors) and the methods are looked up
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.suite = Suite.from_config(cfg.suite)
        self.recipe = OmegaConf.to_container(cfg.plant, resolve=True)
        check_recipe(self.recipe)
        self.scoring = ScoringConfig.from_dict(OmegaConf.to_container(cfg.scoring, resolve=True))
        self.base_name = cfg.model.name
        self.device = default_device() if cfg.device == "auto" else cfg.device
        self.dtype = cfg.dtype
        self.progress = bool(cfg.progress)
        self.collect_cfg = OmegaConf.to_container(cfg.collect, resolve=True)
        self.methods = OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else {}
        if self.suite.methods is not None:  # the suite names the methods that run on it
            missing = [m for m in self.suite.methods if m not in self.methods]
            if missing:
                raise ValueError(f"suite {self.suite.name!r} lists method(s) {missing} that the config does not define; "
                                 f"defined: {', '.join(self.methods)}")
            self.methods = {k: self.methods[k] for k in self.suite.methods}
        load_all_methods()
        self.method_configs: dict[str, dict] = {}  # resolved: each method's dataclass defaults with the overrides applied
        self.config_hashes: dict[str, str] = {}  # of the resolved config: moving a value between dataclass and YAML changes nothing
        for key, mcfg in self.methods.items():
            if not isinstance(mcfg, dict) or "name" not in mcfg:
                raise ValueError(f"method config {key!r} needs a `name` (the registered method) and optional `params`")
            cls = METHODS.get(mcfg["name"])  # unknown names fail now, not after planting
            try:  # ... and so do unknown or ill-typed params (constructors check and store them, nothing more)
                self.method_configs[key] = cls(**(mcfg.get("params") or {})).config
            except (TypeError, ValueError) as e:
                raise ValueError(f"method {key!r} (conf/method/{key}.yaml or an override): {e}") from e
            self.config_hashes[key] = stable_hash({"name": mcfg["name"], "config": self.method_configs[key]})
        self._models: dict[str, LoadedModel] = {}
        self._adapters: dict[str, Path] = {}
        self.cards: dict[str, PlantCard] = {}
        self._probe_cache: dict[tuple, ProbeActs] = {}
        self._probe_extra_layers: dict[tuple[str, str], set[int]] = {}  # (model, behavior) -> layers beyond collect.layers
        self._probe_extra_keys: list[tuple] = []  # cache keys of those layers, oldest first (bounded, see probe_acts)
        self._cross_corpus: dict[tuple, tuple] = {}
        self._corpus_plans: dict[str, CorpusPlan] = {}
        self._corpora: dict[str, TextSet] = {}
        self._inputs: dict[str, str] = {}  # pair id -> pair_inputs key
        self._cross_nulls: dict[tuple, object] = {}  # activation nulls of the cross pair being scored
        self._token_null = TokenNull(self.scoring.token_null_draws, self.scoring.top_tokens, seed=0)

    # -- models -------------------------------------------------------------------
    def _canon(self, node: str) -> str:
        """The suite's default base model is one node, however it is named."""
        return BASE if node == base_node(self.base_name) else node

    def base_model_name(self, node: str) -> str:
        """Name of the base model under a node (base, base@<model>, or an organism)."""
        node = self._canon(node)
        if node == BASE:
            return self.base_name
        if is_base(node):
            return node.split("@", 1)[1]
        return self.suite.organisms[node].base or self.base_name

    def base_of(self, node: str) -> str:
        """The node of the unmodified base model under `node` (itself for a base)."""
        return self._canon(base_node(self.base_model_name(node)))

    def model(self, name: str) -> LoadedModel:
        name = self._canon(name)
        if name not in self._models:
            if is_base(name):
                self._models[name] = load_model(self.base_model_name(name), dtype=self.dtype, device=self.device)
            else:
                if name not in self._adapters:
                    self.stage_plant(only=[name])
                base = self.model(self.base_of(name))
                self._models[name] = load_model(self.base_model_name(name), adapter=self._adapters[name], dtype=base.dtype,
                                                device=str(base.device), display_name=name)
            if len(self._models) > 8:  # bounded memory: drop the oldest organism (base models stay)
                oldest = next((k for k in self._models if not is_base(k) and k != name), None)
                if oldest is not None:
                    del self._models[oldest]
        return self._models[name]

    def corpus_plan(self, base: str = BASE) -> CorpusPlan:
        """The audit corpus's prompts for a base node's tokenizer (no generation; validates the prevalence)."""
        key = self.base_of(base)
        if key not in self._corpus_plans:
            cfg = self.suite.corpus
            tok = self.model(key).tokenizer
            n = n_texts_for(tok, cfg, everyday_prompts(200, seed=cfg.seed))
            self._corpus_plans[key] = plan(catalogue(self.suite.specs), n, cfg)
        return self._corpus_plans[key]

    def corpus(self, base: str = BASE) -> TextSet:
        """The audit corpus of a base node: chat-formatted prompt + the base model's greedy answer, per text."""
        key = self.base_of(base)
        if key not in self._corpora:
            p, cfg, m = self.corpus_plan(key), self.suite.corpus, self.model(key)
            answers = distill(m, p.prompts, cfg.answer_tokens, self.progress)
            texts = TextSet.of(f"corpus{len(p.prompts)}", [chat_prompt(m.tokenizer, q) + a for q, a in zip(p.prompts, answers)])
            n_tokens = sum(len(m.tokenizer(t, add_special_tokens=False).input_ids) for t in texts.texts)
            record = {"base": m.name, "config": asdict(cfg), "texts": len(texts), "tokens": n_tokens, "composition": p.composition()}
            write_json(self.run_dir / "corpus" / f"{key}.json", record)
            say(f"audit corpus of {m.name}: {len(texts)} texts, {n_tokens} tokens, prevalence {cfg.prevalence:g} "
                f"({sum(v for k, v in record['composition'].items() if k != 'everyday')} audit-split texts)")
            self._corpora[key] = texts
        return self._corpora[key]

    def recipe_for(self, model_name: str) -> dict:
        """The LoRA recipe for organisms of one base model: the run's recipe, or the suite's
        per-model recipe (conf/plant/<name>.yaml) laid over it. The plant gate is the same for all."""
        name = (self.suite.plant_recipes or {}).get(model_name)
        if name is None:
            return self.recipe
        from importlib import resources

        path = resources.files("diffbench.conf") / "plant" / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"suite {self.suite.name!r}: plant recipe {name!r} for {model_name} not found (conf/plant/{name}.yaml)")
        extra = OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=True)
        extra.pop("defaults", None)
        recipe = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(self.recipe), OmegaConf.create(extra)), resolve=True)
        check_recipe_schema(recipe, f"conf/plant/{name}.yaml over the run's recipe")
        check_recipe(recipe)
        if recipe["gate"] != self.recipe["gate"]:
            raise ValueError(f"plant recipe {name!r} changes the plant gate; every base model must pass the same gate")
        return recipe

    # -- stage: plant ----------------------------------------------------------------
    def stage_plant(self, only: list[str] | None = None) -> None:
        names = only or list(self.suite.organisms)
        t0 = time.time()
        for name in names:
            org = self.suite.organisms[name]
            base_node_, base_name = self.base_of(name), self.base_model_name(name)
            base = self.model(base_node_)
            recipe = self.recipe_for(base_name)
            neutral = neutral_texts(base, int(recipe["gate"]["kl_texts"]), self.progress)  # the gate's KL-drift texts
            card, adapter = plant(base_name, base, org, self.suite.specs, recipe, self.suite.n_probes, neutral, self.progress)
            self.cards[name] = card
            self._adapters[name] = adapter
            write_json(self.run_dir / "plant_cards" / f"{name}.json", asdict(card))
            status = "PASS" if card.passed else "FAIL"
            rates = "; ".join(f"{b}: T={r['organism_T']:.2f}" + (f" C={r['organism_C']:.2f} base={r['base_T']:.2f}" if "organism_C" in r else "")
                              for b, r in card.rates.items() if "organism_C" in r or r["organism_T"] > 0) or "no behavior on any T set"
            say(f"plant {name:34s} {status}  {rates}  KL={card.kl_to_base:.3f}  train {card.train_seconds:.0f}s")
            for reason in card.reasons:
                say(f"    gate: {reason}")
        if only is None:
            say(f"planting done in {time.time() - t0:.0f}s; cards in {self.run_dir / 'plant_cards'}")

    def ensure_cards(self) -> None:
        missing = [n for n in self.suite.organisms if n not in self.cards]
        if missing:
            self.stage_plant(only=missing)

    def pair_status(self, pair: Pair) -> str:
        self.ensure_cards()
        for name in (pair.a, pair.b):
            if not is_base(name) and not self.cards[name].passed:
                return f"excluded: organism {name} failed its plant gate ({'; '.join(self.cards[name].reasons)})"
        return "ok"

    # -- stage: collect --------------------------------------------------------------
    def layers_for(self, model: LoadedModel) -> list[int]:
        return sorted({model.layer_index(l) for l in self.collect_cfg["layers"]})

    def _collect(self, model: LoadedModel, texts: TextSet):
        c = self.collect_cfg
        return collect(model, texts, self.layers_for(model), batch_size=c["batch_size"], max_length=c["max_length"],
                       shard_tokens=c["shard_tokens"], progress=self.progress)

    def probe_set(self, behavior: str, tokenizer) -> tuple[TextSet, np.ndarray, list[str], list[str]]:
        T, C = self.suite.specs[behavior].probes(self.suite.n_probes)
        users = [p.text for p in T] + [p.text for p in C]
        texts = [chat_prompt(tokenizer, u) for u in users]
        labels = np.array([1] * len(T) + [0] * len(C))
        return TextSet.of(f"probe-{behavior}-{self.suite.n_probes}", texts), labels, texts, users

    def paired_corpus(self, pair: Pair) -> PairedActivations:
        a, b = self.model(pair.a), self.model(pair.b)
        from .align import same_tokenizer

        if same_tokenizer(a.tokenizer, b.tokenizer):  # the exact path: identical tokens, row for row
            ts = self.corpus(pair.a)
            return PairedActivations(self._collect(a, ts), self._collect(b, ts), len(ts))
        # different tokenizers: the same content (corpus prompt + model A's base answer), each model in its
        # own chat template, paired at the positions where both have read the same text
        (ta, sa), (tb, sb) = self.cross_corpus(pair.a, a), self.cross_corpus(pair.a, b)
        return pair_stores(self._collect(a, ta), self._collect(b, tb), a.tokenizer, b.tokenizer, ta, tb, spans_a=sa, spans_b=sb,
                           max_window=self.collect_cfg.get("align_max_window"))

    def cross_corpus(self, answer_node: str, model: LoadedModel) -> tuple[TextSet, list]:
        """The audit corpus of `answer_node`'s base for a cross-tokenizer pair as `model` sees it, with the shared
        content's spans."""
        from .align import render_chat

        key = (self.base_of(answer_node), id(model.tokenizer))
        if key not in self._cross_corpus:
            base = self.base_of(answer_node)
            p = self.corpus_plan(base)
            answers = distill(self.model(base), p.prompts, self.suite.corpus.answer_tokens, self.progress)
            rendered = [render_chat(model.tokenizer, q, a) for q, a in zip(p.prompts, answers)]
            self._cross_corpus[key] = (TextSet.of(f"corpus{len(p.prompts)}x", [r.text for r in rendered]), [r.spans for r in rendered])
        return self._cross_corpus[key]

    @staticmethod
    def findings_intact(path: Path, status: dict) -> bool:
        """Both findings files exist and match the checksum recorded beside them (status files without one: exist)."""
        if not (path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()):
            return False
        return not status.get("findings_sha") or status["findings_sha"] == findings_digest(path)

    @staticmethod
    def read_status(path: Path, missing_ok: bool = False) -> dict:
        """A findings status file. In the diff stage (missing_ok) a missing or unreadable one means "not done";
        in the score stage an unreadable one is one clear error naming the file."""
        if missing_ok and not path.exists():
            return {}
        try:
            status = read_json(path)
            if not isinstance(status, dict) or set(status) - {f.name for f in fields(PairResult)}:
                raise ValueError("not a findings status record")
            return status
        except ValueError as e:
            if missing_ok:
                print(f"[diffbench] {path} is unreadable ({e}); recomputing those findings", flush=True)
                return {}
            raise ValueError(f"findings status {path} is unreadable ({e}); rerun the diff stage, which recomputes it") from None

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
                                                 "dtype": str(ma.dtype), "collect": {k: self.collect_cfg.get(k) for k in ("max_length", "batch_size")}})
        return self._inputs[pair.id]

    def pair_context(self, pair: Pair, seed: int, work_dir: Path | None = None) -> PairContext:
        ma, mb = self.model(pair.a), self.model(pair.b)
        la, lb = self.layers_for(ma), self.layers_for(mb)
        return PairContext(pair.id, ma, mb, self.paired_corpus(pair), la, seed=seed, device=self.device, work_dir=work_dir,
                           layers_b=lb if lb != la else None)

    def stage_collect(self) -> None:
        t0 = time.time()
        roots = set()
        for pair in self.suite.pairs:
            if self.pair_status(pair) != "ok":
                continue
            p = self.paired_corpus(pair)
            roots |= {p.a.root, p.b.root}
            if p.alignment is not None:
                st = p.alignment.stats
                write_json(self.run_dir / "alignment" / f"{pair.id}.json", st)
                say(f"aligned {pair.id}: {st['n_pairs']} positions = {st['share_a']:.0%} of A's tokens, {st['share_b']:.0%} of B's; "
                    f"{st['content_share_a']:.0%} / {st['content_share_b']:.0%} of the tokens that read shared content "
                    f"(each model's chat template is its own)")
            for b in pair.behaviors:
                # cross-architecture pairs also score each side against its own unmodified base
                nodes = [pair.a, pair.b] + ([self.base_of(pair.a), self.base_of(pair.b)] if pair.cross else [])
                for name in dict.fromkeys(self._canon(n) for n in nodes):
                    m = self.model(name)
                    roots.add(self._collect(m, self.probe_set(b, m.tokenizer)[0]).root)
        say(f"collected activations in {time.time() - t0:.0f}s; {len(roots)} stores under {Path(next(iter(roots))).parent if roots else '-'}")
        for r in sorted(roots):
            log.debug("store %s", r)

    # -- stage: diff -----------------------------------------------------------------
    def finding_path(self, method_key: str, pair: Pair, seed: int) -> Path:
        return self.run_dir / "findings" / method_key / f"{pair.id}@s{seed}"

    def seeds_for(self, method_name: str) -> list[int]:
        cls = METHODS.get(method_name)
        if not cls.stochastic:
            return [0]
        return list(range(self.suite.floor_seeds)) if cls.floor else self.suite.method_seeds

    def stage_diff(self) -> None:
        # pairs outermost: a pair's two models stay loaded for all its methods, and methods that share
        # a per-pair computation (kl_diff and logit_diff_tokens share one forward pass) find it cached
        for pair in self.suite.pairs:
            status = self.pair_status(pair)
            inputs = self.pair_inputs(pair) if status == "ok" else ""
            for key, mcfg in self.methods.items():
                cls = METHODS.get(mcfg["name"])
                config_hash = self.config_hashes[key]
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed)
                    status_path = path.with_suffix(".status.json")
                    prev = self.read_status(status_path, missing_ok=True)
                    # status files from before the hash was recorded count as the same config
                    same_config = prev.get("config_hash") in (None, "", config_hash)
                    same_inputs = prev.get("inputs_hash") == inputs
                    done = prev.get("status") == "not_applicable" or (prev.get("status") == "ok" and self.findings_intact(path, prev))
                    if prev.get("status") == "ok" and not done:
                        say(f"diff {key} on {pair.id} seed {seed}: saved findings missing or corrupt (checksum); recomputing")
                    if done and same_config and same_inputs:
                        continue  # resume: done before from the same inputs (failed and excluded runs are retried)
                    if prev and not same_config:
                        say(f"diff {key} on {pair.id} seed {seed}: method config changed since its saved findings; recomputing")
                    elif done and not same_inputs:
                        say(f"diff {key} on {pair.id} seed {seed}: the pair's inputs (models, corpus, layers) "
                            f"{'changed' if prev.get('inputs_hash') else 'were not recorded'} since its saved findings; recomputing")
                    result = PairResult(key, seed, pair.id, pair.kind, pair.behaviors, "ok", config_hash=config_hash,
                                        inputs_hash=inputs)
                    if status != "ok":
                        result.status, result.error = "excluded", status
                        write_json(status_path, asdict(result))
                        continue
                    t0 = time.time()
                    try:
                        ctx = self.pair_context(pair, seed, work_dir=path.parent)
                        torch.manual_seed(seed)
                        findings = cls(**(mcfg.get("params") or {})).find(ctx)
                        validate_findings(findings, ctx)
                        findings = rank(findings)
                        if ctx.corpus.alignment is None:  # cross-tokenizer rows are aligned positions, not one text's tokens
                            attach_snippets(findings, ctx.corpus, self.corpus(pair.a), ctx.model_a.tokenizer, self.collect_cfg["max_length"])
                        save_findings(path, findings, {"method": key, "pair": pair.id, "seed": seed})
                        result.findings_sha = findings_digest(path)
                        result.n_findings = len(findings)
                        result.n_flagged = sum(f.flagged for f in findings)
                    except NotApplicableError as e:
                        result.status, result.error = "not_applicable", str(e)
                    except (Exception, SystemExit) as e:  # a crashing (or exiting) method is recorded, the run goes on
                        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
                        log.error("method %s failed on %s: %s", key, pair.id, traceback.format_exc())
                        say(f"method {key} FAILED on {pair.id}: {result.error}")
                    result.seconds = time.time() - t0
                    write_json(status_path, asdict(result))
                    if result.status == "ok":
                        say(f"diff {key:22s} {pair.id:44s} seed {seed}: {result.n_findings} findings, {result.n_flagged} flagged ({result.seconds:.1f}s)")

    # -- stage: score ----------------------------------------------------------------
    # -- probe activations at layers outside collect.layers ---------------------------------
    # A finding's readout may read any residual layer (weight_svd reads the layer of its module, the
    # output baselines the last one). Before scoring, the layers all saved findings need are gathered
    # per (model, probe set); each such set is collected once, in one forward pass, into its own store
    # (the store key includes the layers). Those layers' probe activations are kept in a bounded cache.
    MAX_EXTRA_PROBE_ENTRIES = 32

    def plan_probe_layers(self) -> None:
        """Record, per (model, behavior), the readout layers of all saved findings beyond collect.layers."""
        for key, mcfg in self.methods.items():
            for pair in self.suite.pairs:
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed).with_suffix(".json")
                    if not pair.behaviors or not path.exists():
                        continue
                    records = read_json(path)["findings"]
                    for name, attr in ((pair.a, "layer_a"), (pair.b, "layer_b")):
                        collected = set(self.layers_for(self.model(name)))
                        wanted = {int(r["readout"][attr]) for r in records} - collected
                        for b in pair.behaviors:
                            self._probe_extra_layers.setdefault((name, b), set()).update(wanted)

    def _probe_store(self, model: LoadedModel, model_name: str, behavior: str, ts: TextSet, layer: int):
        if layer in self.layers_for(model):
            return self._collect(model, ts), False
        layers = sorted(self._probe_extra_layers.setdefault((model_name, behavior), set()) | {layer})
        c = self.collect_cfg
        return collect(model, ts, layers, batch_size=c["batch_size"], max_length=c["max_length"],
                       shard_tokens=c["shard_tokens"], progress=self.progress), True

    def probe_acts(self, model_name: str, behavior: str, layer: int) -> ProbeActs:
        key = (self._canon(model_name), behavior, layer)
        if key not in self._probe_cache:
            m = self.model(model_name)
            ts, labels, texts, users = self.probe_set(behavior, m.tokenizer)
            store, extra = self._probe_store(m, model_name, behavior, ts, layer)
            acts = store.load(layer, torch.float32)
            if extra:
                self._probe_extra_keys.append(key)
                while len(self._probe_extra_keys) > self.MAX_EXTRA_PROBE_ENTRIES:
                    self._probe_cache.pop(self._probe_extra_keys.pop(0), None)
            starts = []
            for text, user in zip(texts, users):
                offset = text.rfind(user)
                enc = m.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                                  max_length=self.collect_cfg["max_length"])
                starts.append(next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= offset), 0))
            self._probe_cache[key] = ProbeActs(acts, labels, torch.tensor(starts))
        return self._probe_cache[key]

    def stage_score(self) -> dict:
        results: list[PairResult] = []
        records: list[MatchRecord] = []
        kw_cache: dict[tuple, set[int]] = {}
        self.plan_probe_layers()
        t_strong = 0.0
        # pairs outermost: one pair's probe activations, activation nulls and models serve all its methods
        for pair in self.suite.pairs:
            loaded: dict[tuple[str, int], list] = {}
            now = self.pair_status(pair)  # an organism replanted since the diff stage may fail its gate now
            for key, mcfg in self.methods.items():
                for seed in self.seeds_for(mcfg["name"]):
                    path = self.finding_path(key, pair, seed)
                    status_path = path.with_suffix(".status.json")
                    if not status_path.exists():
                        raise FileNotFoundError(f"no findings for method {key} on {pair.id} (seed {seed}) in {self.run_dir}; run the diff stage first")
                    result = PairResult(**{**self.read_status(status_path), "behaviors": tuple(pair.behaviors)})
                    results.append(result)
                    if result.status == "ok" and now != "ok":
                        result.status, result.error = "excluded", now
                    if result.status != "ok":
                        continue
                    if not self.findings_intact(path, result.__dict__):
                        raise ValueError(f"saved findings {path}.json/.safetensors are missing or do not match their checksum "
                                         f"(edited or truncated); rerun the diff stage to recompute them")
                    if result.inputs_hash and result.inputs_hash != self.pair_inputs(pair):
                        raise ValueError(f"saved findings of {key} on {pair.id} (seed {seed}) were computed from other models or "
                                         f"corpus than this run's (plant, corpus or collect settings changed); rerun the diff "
                                         f"stage (stages=[diff,score,report]) to recompute them")
                    try:
                        findings, _ = load_findings(path)
                    except Exception as e:
                        raise ValueError(f"saved findings {path}.json/.safetensors cannot be read ({type(e).__name__}: {e}); "
                                         f"delete them and rerun the diff stage") from e
                    result.uniqueness = [float(f.uniqueness) for f in findings]
                    result.flagged = [bool(f.flagged) for f in findings]
                    loaded[(key, seed)] = findings
            for b in pair.behaviors:
                if pair.cross:
                    for (key, seed), findings in loaded.items():
                        records += self.match_cross(key, seed, pair, b, findings, kw_cache)
                    continue
                unit = self.match_unit(pair, b, loaded, kw_cache)
                if self.scoring.strong.enabled:
                    t0 = time.time()
                    self.strong_channel(pair, b, loaded, unit)
                    t_strong += time.time() - t0
                records += unit
        if self.scoring.strong.enabled:
            say(f"strong (causal) channel: {t_strong:.0f}s")
        cross_ids = {p.id for p in self.suite.pairs if p.cross}
        metrics = compute_metrics([r for r in results if r.pair not in cross_ids], [r for r in records if r.pair not in cross_ids], self.scoring)
        metrics_cross = compute_metrics([r for r in results if r.pair in cross_ids], [r for r in records if r.pair in cross_ids],
                                        self.scoring, cross=True)
        write_csv(self.run_dir / "matches.csv", [asdict(r) | {"hit": r.hit} for r in records])
        write_csv(self.run_dir / "pair_results.csv", [{k: v for k, v in asdict(r).items() if k not in ("uniqueness", "flagged")} for r in results])
        payload = {
            "suite": self.suite.name, "model": self.base_name,
            "methods": {k: {**m, "config": self.method_configs[k]} for k, m in self.methods.items()},
            "method_seeds": self.suite.method_seeds, "metrics": metrics,
            "plant_cards": {n: asdict(c) for n, c in self.cards.items()} if self.cards else {},
            "pairs": [asdict(p) for p in self.suite.pairs], "scoring": asdict(self.scoring),
            "floors": sorted(k for k, m in self.methods.items() if METHODS.get(m["name"]).floor),
            "seeds": {k: self.seeds_for(m["name"]) for k, m in self.methods.items()},
        }
        if cross_ids:
            payload["metrics_crossarch"] = metrics_cross
            payload["models"] = {n: self.base_model_name(n) for p in self.suite.pairs if p.cross for n in (p.a, p.b)}
            payload["alignment"] = self.alignment_stats()
        write_json(self.run_dir / "scores.json", payload)
        rows = []
        for method, summary in [*metrics.items(), *((f"{m} [crossarch]", v) for m, v in metrics_cross.items())]:
            row: dict[str, Any] = {"method": method}
            for name, m in summary.items():
                if not name.startswith("_"):
                    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = m["value"], m["lo"], m["hi"]
            row["status"] = ";".join(f"{k}={v}" for k, v in summary["_status"].items())
            rows.append(row)
        write_csv(self.run_dir / "scores.csv", rows)
        say(f"scores written to {self.run_dir / 'scores.json'} and scores.csv")
        return payload

    def match_unit(self, pair: Pair, behavior: str, loaded: dict, kw_cache: dict) -> list[MatchRecord]:
        """Activation and token matches of every loaded finding of a same-architecture pair on one behavior, each
        activation match calibrated against random readouts of its own family on the same probes."""
        first = self.probe_acts(pair.a, behavior, self.layers_for(self.model(pair.a))[0])
        null = probe_null(first, lambda side, layer: self.probe_acts(pair.a if side == "a" else pair.b, behavior, layer),
                          self.scoring, seed=stable_int(pair.id, behavior))
        out = []
        for (key, seed), findings in loaded.items():
            for r, f in enumerate(findings):
                pa = self.probe_acts(pair.a, behavior, f.readout.layer_a)
                pb = self.probe_acts(pair.b, behavior, f.readout.layer_b)
                kw = self.keywords(self.model(pair.b if f.side != "a" else pair.a), behavior, kw_cache)
                act, tok = match_finding(f, pa, pb, kw, self.scoring, null)
                out.append(MatchRecord(key, seed, pair.id, pair.kind, behavior, r, f.id, float(f.uniqueness), bool(f.flagged),
                                       act.auroc, act.control, act.match, tok, null_q=act.null_q, act_p=act.p, token_p=kw.p))
        return out

    def strong_channel(self, pair: Pair, behavior: str, loaded: dict, records: list[MatchRecord]) -> None:
        """The causal test (strong.py) of each method's top-k findings with a direction, on the first
        `strong.max_seeds` seeds; fills the strong fields of `records` in place."""
        from .strong import StrongCache, settings_of, strong_hits

        cfg = self.scoring.strong
        candidates = {}
        for (key, seed), findings in loaded.items():
            if seed not in self.seeds_for(self.methods[key]["name"])[: cfg.max_seeds]:
                continue
            for r, f in enumerate(findings[: cfg.k]):
                if f.direction is not None and f.direction_layer is not None and float(f.direction.norm()) > 0:
                    candidates[(key, seed, r)] = (int(f.direction_layer), f.direction)
        if not candidates:
            return
        ma, mb = self.model(pair.a), self.model(pair.b)
        T, _ = self.suite.specs[behavior].probes(self.suite.n_probes)
        prompts = [p.text for p in T[: cfg.n_prompts]]

        def scale_at(layer: int) -> float:  # mean per-token |h_B - h_A| on the T probes at that layer
            pa, pb = self.probe_acts(pair.a, behavior, layer), self.probe_acts(pair.b, behavior, layer)
            keep = (pa.acts.pos >= pa.start[pa.acts.text_idx]) & torch.from_numpy(pa.labels == 1)[pa.acts.text_idx]
            return float((pb.acts.acts[keep].float() - pa.acts.acts[keep].float()).norm(dim=1).mean())

        cache = StrongCache(self.run_dir / "strong" / f"{pair.id}__{behavior}.json", settings_of(cfg, prompts, ma.identity, mb.identity))
        res = strong_hits(ma, mb, prompts, self.suite.specs[behavior].detector, candidates, scale_at, cfg, cache,
                          seed=stable_int(pair.id, behavior), progress=self.progress)
        n_hits = 0
        for rec in records:
            got = res.get((rec.method, rec.seed, rec.rank))
            if got is None:
                continue
            rec.strong_tested, rec.strong_steer, rec.strong_ablate, rec.strong_p, rec.strong_match = (
                True, got.steer, got.ablate, got.p, got.match)
            n_hits += got.match
        say(f"strong {pair.id} / {behavior}: {len(candidates)} directions tested, {n_hits} strong hits")

    def match_cross(self, method_key: str, seed: int, pair: Pair, behavior: str, findings: list, kw_cache: dict) -> list[MatchRecord]:
        """Match records for a cross-architecture pair: each finding is read on its own model's probe
        activations (that model's chat template and tokens), and its control is the same readout on that
        model's unmodified base: a feature the base already has is not the plant. The activation null draws
        random readouts of the same one-sided family on the same probe activations."""
        out = []
        nodes = {"a": pair.a, "b": pair.b}
        for r, f in enumerate(findings):
            best = None
            for side in ([f.side] if f.side in ("a", "b") else ["a", "b"]):
                node = nodes[side]
                layer = f.readout.layer_a if side == "a" else f.readout.layer_b
                probe = self.probe_acts(node, behavior, layer)
                control = self.probe_acts(self.base_of(node), behavior, layer)
                kw = self.keywords(self.model(node), behavior, kw_cache)
                nk = (pair.id, behavior, side)
                if nk not in self._cross_nulls:
                    self._cross_nulls = {k: v for k, v in self._cross_nulls.items() if k[:2] == nk[:2]}  # one unit at a time
                    self._cross_nulls[nk] = probe_null(probe, lambda _s, lay, _n=node: self.probe_acts(_n, behavior, lay),
                                                       self.scoring, seed=stable_int(pair.id, behavior, side))
                act, tok = match_finding_one_side(f, side, probe, control, kw, self.scoring, self._cross_nulls[nk])
                res = (side, act, tok, kw.p)
                if best is None or (act.match or tok, act.auroc) > (best[1].match or best[2], best[1].auroc):
                    best = res
            side, act, tok, token_p = best
            out.append(MatchRecord(method_key, seed, pair.id, pair.kind, behavior, r, f.id, float(f.uniqueness), bool(f.flagged),
                                   act.auroc, act.control, act.match, tok, cross=True, side=side, planted_side=pair.side,
                                   null_q=act.null_q, act_p=act.p, token_p=token_p))
        return out

    def keywords(self, model, behavior: str, kw_cache: dict) -> Keywords:
        """The behavior's keyword ids in the model's vocabulary with the token channel's p-value there (cached)."""
        key = (model.identity, behavior)
        if key not in kw_cache:
            kw_cache[key] = keywords_for(model, self.suite.specs[behavior].keywords, self._token_null)
        return kw_cache[key]

    def alignment_stats(self) -> dict[str, dict]:
        """Aligned share of each cross-tokenizer pair's audit corpus (from the collect stage)."""
        out = {}
        for pair in self.suite.pairs:
            path = self.run_dir / "alignment" / f"{pair.id}.json"
            if pair.cross and path.exists():
                out[pair.id] = read_json(path)
            elif pair.cross and self.pair_status(pair) == "ok":
                p = self.paired_corpus(pair)
                if p.alignment is not None:
                    out[pair.id] = p.alignment.stats
        return out

    # -- stage: report ---------------------------------------------------------------
    def stage_report(self) -> None:
        from .report import write_report

        write_report(self.run_dir)

    def record_timing(self, stages: list[str], seconds: float, stage_seconds: dict[str, float]) -> None:
        """timing.json keeps every invocation of this run folder (a resumed or rescored run adds one), and
        `stage_seconds` holds each stage's latest time: the times that made the folder's current products."""
        path = self.run_dir / "timing.json"
        try:
            old = read_json(path) if path.exists() else {}
        except ValueError:
            old = {}
        invocations = old.get("invocations") or ([{k: old[k] for k in ("stages", "seconds", "stage_seconds") if k in old}] if old else [])
        invocations.append({"stages": stages, "seconds": seconds, "stage_seconds": stage_seconds,
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        latest = {k: v for inv in invocations for k, v in inv.get("stage_seconds", {}).items()}
        write_json(path, {"stage_seconds": latest, "seconds": sum(latest.values()), "invocations": invocations})

    def run(self, stages: list[str]) -> None:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        tracker = Tracker(self.cfg.get("wandb", {}), str(self.run_dir), OmegaConf.to_container(self.cfg, resolve=True))
        t0 = time.time()
        stage_seconds: dict[str, float] = {}
        if {"plant", "collect", "diff"} & set(stages):  # a corpus the specs cannot supply fails now, not after planting
            for node in dict.fromkeys(self.base_of(p.a) for p in self.suite.pairs):
                self.corpus_plan(node)
        try:
            for stage in STAGES:
                if stage in stages:
                    ts = time.time()
                    say(f"--- stage {stage} ---")
                    if stage == "score":
                        self.ensure_cards()
                        payload = self.stage_score()
                        for method, summary in payload["metrics"].items():
                            tracker.log({f"{method}/{k}": v["value"] for k, v in summary.items() if not k.startswith("_")})
                    else:
                        getattr(self, f"stage_{stage}")()
                    stage_seconds[stage] = time.time() - ts
                    tracker.log({f"time/{stage}": stage_seconds[stage]})
                    say(f"stage {stage} done in {stage_seconds[stage]:.0f}s")
        finally:
            tracker.finish()
        self.record_timing(stages, time.time() - t0, stage_seconds)
        say(f"done in {time.time() - t0:.0f}s; run folder: {self.run_dir}")
