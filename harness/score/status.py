"""The diff stage's record of each (method, pair, seed): `<findings>.status.json` beside the findings files.

The record is a `PairResult` (status, error, counts, seconds) plus what the findings were computed from
(`config_hash`, `inputs_hash`) and their checksum (`findings_sha`); the diff stage reuses findings only when all
three still match, and the score stage refuses findings whose files no longer match their checksum.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ...core.io import read_json, sha256_file, stable_hash
from .scoring import PairResult


def findings_digest(path: Path) -> str:
    return stable_hash([sha256_file(path.with_suffix(".json")), sha256_file(path.with_suffix(".safetensors"))])


def findings_intact(path: Path, status: dict) -> bool:
    """Both findings files exist and match the checksum recorded beside them (status files without one: exist)."""
    if not (path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()):
        return False
    return not status.get("findings_sha") or status["findings_sha"] == findings_digest(path)


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
