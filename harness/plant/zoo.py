"""The organism zoo: planted and null organisms shipped as fixed artifacts (the `zoo/` folder of the package).

Every organism is a standard PEFT adapter folder, `zoo/organisms/<name>/` (`adapter_config.json` +
`adapter_model.safetensors`, loadable by `peft.PeftModel.from_pretrained` with no diffbench code), and one
entry of `zoo/manifest.json`:

    name, kind, behaviors, recipe (name) and recipe_hash, seed, paraphrase, base (model name) and base_identity,
    specs ({behavior: content hash}), key (the organism key below), files ({file: sha256}), gate (passed,
    rates per behavior, KL to base, probes), trained (seconds, group size, machine, dtype, torch version)

The organism key is a hash of what the adapter depends on: the base model's identity, the organism's kind,
behaviors, seed and paraphrase, the specs' contents and the training recipe (`plant.adapter_key` without the
dtype the planting machine ran in). A run looks its organisms up by key: a shipped organism with the same key
is loaded (its checksums verified) instead of planting, so every machine scores the same adapters. A shipped
file whose checksum does not match is a clear error (`ZooError`), never silently used; an organism whose key
is not shipped (another recipe, an edited spec) is planted as before. `plant.source=fresh` (or `plant=fresh`)
re-plants everything.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...core.env import source_commit
from ...core.io import atomic_write, dumps, read_json, sha256_file, stable_hash
from .recipe import PlantRecipe

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"  # the source checkout's zoo/ (installed as diffbench.zoo)
MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ZooError(ValueError):
    """A damaged or inconsistent shipped organism; the message says which file and what to do."""


@dataclass
class ZooEntry:
    name: str
    kind: str
    behaviors: list[str]
    recipe: str
    recipe_hash: str
    seed: int
    paraphrase: int
    base: str
    base_identity: str
    specs: dict[str, str]
    key: str
    files: dict[str, str]
    gate: dict[str, Any]
    trained: dict[str, Any] = field(default_factory=dict)
    family: list[str] = field(default_factory=list)  # each behavior's family ("" for a hand-written spec)

    @property
    def passed(self) -> bool:
        return bool(self.gate.get("passed"))


def zoo_dir() -> Path:
    from importlib import resources

    try:
        path = Path(str(resources.files("diffbench.zoo")))
    except ModuleNotFoundError:
        path = ZOO_DIR
    return path


def organism_dir(name: str, root: Path | None = None) -> Path:
    return (root or zoo_dir()) / "organisms" / name


def load_manifest(root: Path | None = None) -> dict[str, ZooEntry]:
    """{name: entry}; an absent manifest is an empty zoo, an unreadable one a ZooError."""
    path = (root or zoo_dir()) / MANIFEST
    if not path.exists():
        return {}
    try:
        raw = read_json(path)
        entries = [ZooEntry(**e) for e in raw["organisms"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{path}: not a valid zoo manifest ({e}); restore it with `git checkout -- zoo/`") from e
    return {e.name: e for e in entries}


@lru_cache(maxsize=4)
def _by_key(root: str) -> dict[str, ZooEntry]:
    return {e.key: e for e in load_manifest(Path(root)).values()}


def find(key: str, root: Path | None = None) -> ZooEntry | None:
    """The shipped organism with this organism key, or None."""
    return _by_key(str(root or zoo_dir())).get(key)


def verify(entry: ZooEntry, root: Path | None = None) -> list[str]:
    """Problems with one shipped organism's files (missing, or a checksum that does not match); [] if intact."""
    folder = organism_dir(entry.name, root)
    problems = []
    for name, digest in entry.files.items():
        f = folder / name
        if not f.is_file():
            problems.append(f"{entry.name}/{name}: missing")
        elif sha256_file(f) != digest:
            problems.append(f"{entry.name}/{name}: sha256 does not match the manifest (damaged or edited)")
    missing = [n for n in ADAPTER_FILES if n not in entry.files]
    if missing:
        problems.append(f"{entry.name}: the manifest lists no {', '.join(missing)}")
    return problems


def base_of(adapter: Path, root: Path | None = None) -> str | None:
    """The base model name of a shipped organism's adapter folder, wherever it was copied: the manifest entry whose
    adapter weights have the folder's sha256 (the shipped adapter_config.json names no base, to carry no machine
    path); None for an adapter the zoo did not ship."""
    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    digest = sha256_file(weights)
    return next((e.base for e in load_manifest(root).values() if e.files.get("adapter_model.safetensors") == digest), None)


def shipped_adapter(entry: ZooEntry, root: Path | None = None) -> Path:
    """The verified adapter folder of a shipped organism; a ZooError if any file is missing or damaged."""
    problems = verify(entry, root)
    if problems:
        raise ZooError(f"shipped organism {entry.name!r} is damaged: {'; '.join(problems)}. Restore it with "
                       "`git checkout -- zoo/` (or reinstall diffbench), or re-plant with plant.source=fresh")
    return organism_dir(entry.name, root)


def machine() -> dict[str, str]:
    import torch

    from ...core.env import cpu_model

    return {"cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version()}


def add(entry: ZooEntry, adapter: Path, root: Path | None = None) -> ZooEntry:
    """Copy an adapter folder into the zoo and record it in the manifest (atomically; replaces an entry of the same
    name). Only the PEFT files are shipped; their checksums go into the entry."""
    root = root or zoo_dir()
    dest = organism_dir(entry.name, root)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(adapter / name, tmp / name)
    entry.files = {name: sha256_file(tmp / name) for name in ADAPTER_FILES}
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    manifest = load_manifest(root)
    manifest[entry.name] = entry
    write_manifest(manifest, root)
    return entry


def write_manifest(manifest: dict[str, ZooEntry], root: Path | None = None) -> None:
    from dataclasses import asdict

    root = root or zoo_dir()
    body = {"format": 1, "about": "diffbench organism zoo: see harness/plant/zoo.py and README (Organisms)",
            "organisms": [asdict(manifest[n]) for n in sorted(manifest)]}
    atomic_write(root / MANIFEST, dumps(body) + "\n")
    _by_key.cache_clear()


def export(names: list[str] | None, out: Path, root: Path | None = None) -> list[Path]:
    """Copy shipped organisms' PEFT folders (verified) to `out/<name>/`, with each one's manifest entry beside them."""
    from dataclasses import asdict

    manifest = load_manifest(root)
    chosen = names or sorted(manifest)
    unknown = [n for n in chosen if n not in manifest]
    if unknown:
        raise ZooError(f"not in the zoo: {', '.join(unknown)} (see `diffbench organisms list`)")
    written = []
    for n in chosen:
        src = shipped_adapter(manifest[n], root)
        dest = out / n
        dest.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(src / name, dest / name)
        (dest / "diffbench_organism.json").write_text(json.dumps(asdict(manifest[n]), indent=2) + "\n")
        written.append(dest)
    return written


def size_bytes(root: Path | None = None) -> int:
    folder = (root or zoo_dir()) / "organisms"
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def recipe_hash(recipe: dict) -> str:
    return stable_hash(train_recipe(recipe))


def train_recipe(recipe: dict) -> dict:
    """The part of a plant recipe that changes the adapter (not the gate, not where organisms come from)."""
    return {k: v for k, v in recipe.items() if k not in ("gate", "source")}


def shipped_organism(base, org, specs: dict, recipe: dict):
    """(PlantCard, adapter folder) of the shipped organism matching `org` under `recipe` (by organism key), or None
    when none matches or the recipe asks for a fresh plant. A matching organism with a damaged file is a ZooError."""
    from .organism import PlantCard
    from .train import organism_key

    if PlantRecipe.of(recipe).source != "shipped":
        return None
    entry = find(organism_key(base, org, specs, recipe))
    if entry is None:
        return None
    adapter = shipped_adapter(entry)
    gate, trained = entry.gate, entry.trained
    card = PlantCard(organism=org.name, kind=org.kind, behaviors=list(org.behaviors), seed=org.seed, passed=entry.passed,
                     reasons=list(gate.get("reasons", [])), rates=gate.get("rates", {}), kl_to_base=float(gate.get("kl_to_base", 0.0)),
                     train_loss_first=float(trained.get("loss_first", 0.0)), train_loss_last=float(trained.get("loss_last", 0.0)),
                     train_seconds=0.0, gate_seconds=0.0, adapter=f"zoo/organisms/{entry.name}", recipe=dict(recipe),
                     examples=gate.get("examples", {}), attempts=list(gate.get("attempts", [])))
    return card, adapter


# ----------------------------------------------------------------------------- the zoo's definition (zoo/zoo.yaml)

ZOO_ORGANISM_FIELDS = {"name", "kind", "behaviors", "seed", "paraphrase", "recipe"}


@dataclass
class ZooSpec:
    """zoo/zoo.yaml: which organisms the zoo holds (planted by scripts/plant_zoo.py), on which base model, and which
    of them form analog pairs (two independent plants of the same behaviors)."""

    base: str
    gate_probes: int
    organisms: list  # [Organism]
    analogs: list[tuple[str, str]]
    specs: dict  # every behavior the zoo plants or gates against: {name: BehaviorSpec}

    @classmethod
    def load(cls, path: Path | None = None) -> "ZooSpec":
        """zoo.yaml with every behavior spec it names, loaded and validated once per process and file version (about
        80 specs, a second or more each on a busy 2-core machine); the result is shared: treat it as read-only."""
        path = Path(path or zoo_dir() / "zoo.yaml")
        return cls._load(str(path), path.stat().st_mtime_ns)

    @classmethod
    @lru_cache(maxsize=2)
    def _load(cls, path_str: str, _mtime_ns: int) -> "ZooSpec":
        import yaml

        from ...tasks.spec import BehaviorSpec, available_behaviors
        from .organism import NULL_KINDS, Organism

        path = Path(path_str)
        raw = yaml.safe_load(path.read_text())
        where = str(path)
        orgs, seen = [], set()
        for i, o in enumerate(raw.get("organisms") or []):
            if not isinstance(o, dict) or set(o) - ZOO_ORGANISM_FIELDS or "name" not in o:
                raise ZooError(f"{where}: organism {i} must be a mapping with a name and only {sorted(ZOO_ORGANISM_FIELDS)}")
            kind = o.get("kind", "behavior")
            if kind != "behavior" and kind not in NULL_KINDS:
                raise ZooError(f"{where}: organism {o['name']!r}: unknown kind {kind!r}")
            if (kind == "behavior") != bool(o.get("behaviors")):
                raise ZooError(f"{where}: organism {o['name']!r}: a behavior organism lists behaviors, a null organism none")
            if o["name"] in seen:
                raise ZooError(f"{where}: organism {o['name']!r} listed twice")
            seen.add(o["name"])
            orgs.append(Organism(str(o["name"]), kind, tuple(o.get("behaviors") or ()), seed=int(o.get("seed", 0)),
                                 paraphrase=int(o.get("paraphrase", 0)), recipe=str(o.get("recipe", ""))))
        names = {o.name for o in orgs}
        analogs = [tuple(p) for p in raw.get("analogs") or []]
        for a, b in analogs:
            if a not in names or b not in names:
                raise ZooError(f"{where}: analog pair {a} / {b} names an organism not in the zoo")
        behaviors = sorted({b for o in orgs for b in o.behaviors} | set(available_behaviors()))
        specs = {b: BehaviorSpec.load(b) for b in behaviors}
        return cls(str(raw["base"]), int(raw.get("gate_probes", 64)), orgs, analogs, specs)

    def recipe(self, org) -> dict:
        """The recipe an organism is planted with: conf/plant/lora.yaml, with conf/plant/<org.recipe>.yaml over it."""
        from importlib import resources

        from omegaconf import OmegaConf

        from ..workspace import overlay_recipe

        base = OmegaConf.to_container(OmegaConf.create((resources.files("diffbench.conf") / "plant" / "lora.yaml").read_text()))
        return overlay_recipe(base, org.recipe, f"zoo organism {org.name}") if org.recipe else base

    def entry(self, base, org, card, train_log: dict, recipe: dict, commit: str | None = None) -> ZooEntry:
        """The manifest entry of a planted organism that passed its gate (files are filled in by `add`).
        `commit`: the commit the planting process started from (`core.env.source_commit()` at its start; "+dirty" when the
        checkout had uncommitted changes then)."""
        from .train import organism_key

        losses = train_log.get("losses") or [0.0]
        return ZooEntry(
            name=org.name, kind=org.kind, behaviors=list(org.behaviors), recipe=org.recipe or "lora",
            recipe_hash=recipe_hash(recipe), seed=card.seed, paraphrase=org.paraphrase, base=self.base,
            base_identity=base.identity, specs={b: self.specs[b].content_hash for b in org.behaviors},
            key=organism_key(base, org, self.specs, recipe), files={},
            gate={"passed": card.passed, "probes": self.gate_probes, "rates": card.rates, "kl_to_base": card.kl_to_base,
                  "reasons": card.reasons, "examples": card.examples,
                  "attempts": [{k: v for k, v in a.items() if k != "adapter"} for a in card.attempts]},  # no machine paths
            trained={"seconds": round(float(train_log.get("seconds", 0.0)), 1), "group_size": train_log.get("group_size", 1),
                     "loss_first": losses[0], "loss_last": sum(losses[-5:]) / len(losses[-5:]), "dtype": "fp32",
                     "commit": source_commit() if commit is None else commit,
                     **machine()},
            family=[self.specs[b].family for b in org.behaviors])
