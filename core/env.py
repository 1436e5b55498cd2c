"""The environment every stage and method shares: where caches live, which device and dtype, how many CPU threads."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


def cache_dir() -> Path:
    """Root of every diffbench cache (models, adapters, activations).

    $DIFFBENCH_CACHE wins; otherwise $XDG_CACHE_HOME/diffbench or ~/.cache/diffbench.
    """
    env = os.environ.get("DIFFBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffbench"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """'auto' is bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda") or cpu_has_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32 or bf16")
    return table[dtype]


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_threads(setting: int | str | None, device: torch.device) -> int | None:
    """CPU threads to train with: None = leave torch's setting, an int, or "auto": 1 thread on
    machines with at most 4 cores, else torch's setting. The training step is many small ops; on a
    2-core machine shared with other jobs, OpenMP's barrier in each op waits for a descheduled
    worker, and 2 threads ran the same training 10-20x slower than 1 (measured here). A timing
    probe at start-up was tried and dropped: the contention it saw did not predict the next minute."""
    if setting is None or device.type != "cpu":
        return None
    if setting != "auto":
        return max(1, int(setting))
    return 1 if (os.cpu_count() or 1) <= 4 else None


@contextmanager
def cpu_threads(setting: Any, device: str):
    """Run the block with `pick_threads(setting)` torch CPU threads, restoring the count after."""
    old = torch.get_num_threads()
    chosen = pick_threads(setting, torch.device(device))
    if chosen is not None:
        torch.set_num_threads(chosen)
    try:
        yield chosen or old
    finally:
        torch.set_num_threads(old)


def bf16_flag(flag: Any, device: str) -> bool:
    if isinstance(flag, bool):
        return flag
    if flag in (None, "auto"):
        if torch.device(device).type != "cpu":
            return False
        return cpu_has_bf16()
    return str(flag).lower() in ("1", "true", "yes")
