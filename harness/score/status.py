"""The diff stage's record of each (method, pair, seed): `<findings>.status.json` beside the findings files.

The record is a `PairResult` (status, error, counts, seconds) plus what the findings were computed from
(`config_hash`, `inputs_hash`) and their checksum (`findings_sha`); the diff stage reuses findings only when all
three still match, and the score stage refuses findings whose files no longer match their checksum.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ...core.env import say
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


def saved_run_current(path: Path, config_hash: str, inputs: str, label: str) -> bool:
    """A saved run at `path` (findings + status record) the diff stages may keep: ok with intact findings, or not
    applicable, made from the same method config and the same inputs. Failed and excluded runs are retried. Says why
    where a saved run is recomputed; `label` names the run in that line (e.g. "diff mean_diff on PAIR seed 0")."""
    prev = read_status(path.with_suffix(".status.json"), missing_ok=True)
    same_config = prev.get("config_hash") in (None, "", config_hash)  # records from before the hash: the same
    same_inputs = prev.get("inputs_hash") == inputs
    done = prev.get("status") == "not_applicable" or (prev.get("status") == "ok" and findings_intact(path, prev))
    if prev.get("status") == "ok" and not done:
        say(f"{label}: saved findings missing or corrupt (checksum); recomputing")
    if done and same_config and same_inputs:
        return True
    if prev and not same_config:
        say(f"{label}: method config changed since its saved findings; recomputing")
    elif done and not same_inputs:
        say(f"{label}: the inputs (models, corpus, layers) "
            f"{'changed' if prev.get('inputs_hash') else 'were not recorded'} since its saved findings; recomputing")
    return False
