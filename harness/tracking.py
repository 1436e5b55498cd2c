"""Optional Weights & Biases logging: off by default, offline when on, never needs network."""

from __future__ import annotations

import os
from typing import Any


class Tracker:
    def __init__(self, cfg: Any, run_dir: str, config: dict):
        self.run = None
        if not cfg.get("enabled", False):
            return
        mode = cfg.get("mode", "offline")
        if mode not in ("offline", "disabled", "online"):
            raise ValueError(f"wandb.mode must be offline, disabled or online, got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(project=cfg.get("project", "diffbench"), mode=mode, dir=run_dir, config=config, reinit=True)

    def log(self, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in data.items() if isinstance(v, (int, float))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
