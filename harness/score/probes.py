"""Probe activations for scoring: each model's residual stream on a behavior's held-out T and C probes.

A finding's readout may read any residual layer (weight_svd reads the layer of its module, the output
baselines the last one). Before scoring, the layers all saved findings need are gathered per (model, probe
set) (`plan`); each such set is collected once, in one forward pass, into its own store (the store key
includes the layers). Those extra layers' probe activations are kept in a bounded cache.
"""

from __future__ import annotations

import torch

from ...core.io import read_json
from ..data.generate import user_content_offset
from .scoring import ProbeActs
from ..workspace import Workspace


class Probes:
    MAX_EXTRA_ENTRIES = 32

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._cache: dict[tuple, ProbeActs] = {}
        self._extra_layers: dict[tuple[str, str], set[int]] = {}  # (model, behavior) -> layers beyond collect.layers
        self._extra_keys: list[tuple] = []  # cache keys of those layers, oldest first (bounded)

    def plan(self) -> None:
        """Record, per (model, behavior), the readout layers of all saved findings beyond collect.layers."""
        ws = self.ws
        for key, mcfg in ws.methods.items():
            for pair in ws.suite.pairs:
                for seed in ws.seeds_for(mcfg["name"], pair):
                    path = ws.finding_path(key, pair, seed).with_suffix(".json")
                    if not pair.behaviors or not path.exists():
                        continue
                    records = read_json(path)["findings"]
                    for name, attr in ((pair.a, "layer_a"), (pair.b, "layer_b")):
                        collected = set(ws.layers_for(ws.model(name)))
                        wanted = {int(r["readout"][attr]) for r in records} - collected
                        for b in pair.behaviors:
                            self._extra_layers.setdefault((name, b), set()).update(wanted)

    def acts(self, model_name: str, behavior: str, layer: int) -> ProbeActs:
        """The probes' activations at `layer`, their labels (T = 1) and where each probe's user text starts."""
        ws = self.ws
        key = (ws.canon(model_name), behavior, layer)
        if key not in self._cache:
            m = ws.model(model_name)
            ts, labels, texts, users = ws.probe_set(behavior, m.tokenizer)
            extra = layer not in ws.layers_for(m)
            layers = sorted(self._extra_layers.setdefault((model_name, behavior), set()) | {layer}) if extra else None
            acts = ws.collect(m, ts, layers).load(layer, torch.float32)
            if extra:
                self._extra_keys.append(key)
                while len(self._extra_keys) > self.MAX_EXTRA_ENTRIES:
                    self._cache.pop(self._extra_keys.pop(0), None)
            starts = []
            for text, user in zip(texts, users):
                offset = user_content_offset(m.tokenizer, text, user)
                enc = m.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                                  max_length=ws.collect_cfg.max_length)
                starts.append(next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= offset), 0))
            self._cache[key] = ProbeActs(acts, labels, torch.tensor(starts))
        return self._cache[key]
