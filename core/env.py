"""The environment every stage and method shares: where caches live, which device and dtype, how many CPU threads."""

from __future__ import annotations

import logging

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

# OpenMP reads its wait policy when torch first loads it, so this is the policy in force; the `diffbench` command sets
# PASSIVE before it imports torch (harness/cli.py) unless the environment already names a policy
OMP_PASSIVE = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


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


def dtype_name(dtype: torch.dtype) -> str:
    """The short name `resolve_dtype` reads back ("fp32", "bf16", "fp16"): what results and shipped files record."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).removeprefix("torch."))


@lru_cache(maxsize=1)
def source_commit() -> str:
    """The source checkout's git commit, 12 characters, "+dirty" with uncommitted changes to tracked files ('' outside
    a checkout): results and shipped organisms name the code that made them."""
    import subprocess

    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip()[:12] + ("+dirty" if dirty else "") if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module knows: results name the machine that made them."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_threads(setting: int | str | None, device: torch.device) -> int | None:
    """CPU threads for a stage or method: None = leave torch's setting, an int, or "auto": every usable core when
    OpenMP's wait policy is PASSIVE (the `diffbench` command's default), else 1 thread on machines with at most 4
    cores.

    Why (scripts/bench_threads.py, idle 2-core Zen 4, work per second relative to 1 thread alone; a crosscoder
    training step / a SmolLM2 forward with LM head): 2 threads alone 1.61 / 1.89, beside one busy core 0.46 / 0.78
    (OpenMP's spinning barriers wait for a descheduled worker); with OMP_WAIT_POLICY=PASSIVE 1.45 / 1.74 alone and
    0.99 / 1.00 beside a busy core. So every core under PASSIVE never loses to 1 thread, and without it 1 thread is
    the safe choice on a small shared machine."""
    if setting is None or device.type != "cpu":
        return None
    if setting != "auto":
        return max(1, int(setting))
    if OMP_PASSIVE:
        # the cores this process may use, not torch's current count: a launcher's worker (joblib's loky sets
        # OMP_NUM_THREADS = cores / jobs) would otherwise train with fewer threads than a single-process run, and
        # float reductions over a different thread count give different dictionaries (the quick-suite multirun
        # differed from the single run in 4 metric values for this reason alone)
        return usable_cores()
    return 1 if usable_cores() <= 4 else None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a Slurm or container CPU limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


def say(msg: str) -> None:
    """One progress line of a run: printed at once (runs are long and often piped to a file), and logged to the
    `diffbench.say` logger, which a command's run writes into the run folder's cli.log
    (conf/hydra/job_logging/diffbench.yaml); elsewhere that logger has no handler and prints nothing more."""
    print(f"[diffbench] {msg}", flush=True)
    logging.getLogger("diffbench.say").info(msg)
