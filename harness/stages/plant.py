"""Stage 1, plant: train (or find in the cache) each organism's LoRA adapter and gate it (harness/plant/train.py).

Returns the plant cards; the workspace gets each organism's adapter, so later stages can load it."""

from __future__ import annotations

import time
from dataclasses import asdict

from ...core.io import write_json
from ..plant.organism import PlantCard
from ..plant.recipe import PlantRecipe
from ..plant.distill import neutral_texts
from ..plant.gate import plant_with_retries
from ...core.env import say
from ..workspace import Workspace
from ..plant.zoo import shipped_organism


def run(ws: Workspace, only: list[str] | None = None, quiet: bool = False) -> dict[str, PlantCard]:
    """Plant the suite's organisms (or `only` those). `quiet`: no summary line (the pipeline preparing the
    organisms for a later stage; every organism still gets its one line)."""
    names = only or list(ws.suite.organisms)
    t0 = time.time()
    n_shipped = 0
    for name in names:
        org = ws.suite.organisms[name]
        base_name = ws.base_model_name(name)
        base = ws.model(ws.base_of(name))
        recipe = ws.organism_recipe(name)
        shipped = shipped_organism(base, org, ws.suite.specs, recipe)  # the zoo's copy (harness/plant/zoo.py), if it ships one
        if shipped is not None:
            card, adapter = shipped
            n_shipped += 1
        else:
            neutral = neutral_texts(base, PlantRecipe.of(recipe).gate.kl_texts, ws.progress)  # the gate's KL-drift texts
            card, adapter = plant_with_retries(base_name, base, org, ws.suite.specs, recipe, ws.suite.n_probes, neutral, ws.progress)
        ws.add_organism(name, card, adapter)
        write_json(ws.run_dir / "plant_cards" / f"{name}.json", asdict(card))
        status = "PASS" if card.passed else "FAIL"
        rates = "; ".join(f"{b}: T={r['organism_T']:.2f}" + (f" C={r['organism_C']:.2f} base={r['base_T']:.2f}" if "organism_C" in r else "")
                          for b, r in card.rates.items() if "organism_C" in r or r["organism_T"] > 0) or "no behavior on any T set"
        for i, earlier in enumerate(card.attempts, 1):
            say(f"    training {i} (seed {earlier['seed']}) failed the gate: {'; '.join(earlier['reasons'])}; trained again")
        origin = "shipped" if shipped is not None else f"train {card.train_seconds:.0f}s"
        say(f"plant {name:34s} {status}  {rates}  KL={card.kl_to_base:.3f}  {origin}")
        for reason in card.reasons:
            say(f"    gate: {reason}")
    if only is None and not quiet:
        say(f"planting done in {time.time() - t0:.0f}s ({n_shipped} of {len(names)} organisms shipped, the rest planted here); "
            f"cards in {ws.run_dir / 'plant_cards'}")
    return {n: ws.cards[n] for n in names}
