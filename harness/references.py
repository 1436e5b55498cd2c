"""The committed reference runs by name: what `diffbench evaluate` scores a new method against and what a shorter
run's leaderboard quotes (the zoo's pooled floors). Paths are relative to the source checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCES = {"quick": "results/quick-audit-smollm2-135m", "full": "results/full-audit-smollm2-135m", "zoo": "results/zoo-smollm2-135m"}


def reference_dir(name: str) -> Path:
    """A reference name (quick, full, zoo: the source checkout's results/) or a run folder."""
    path = REPO / REFERENCES[name] if name in REFERENCES else Path(name).expanduser()
    if not (path / "scores.json").is_file() or not (path / "config.yaml").is_file():
        known = ", ".join(REFERENCES)
        raise FileNotFoundError(f"reference {name!r}: {path} is not a scored run folder (no scores.json / config.yaml); "
                                f"give a run folder or one of {known} (in a source checkout)")
    return path
