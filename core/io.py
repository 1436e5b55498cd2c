"""Atomic file writes and small result writers (JSON, CSV).

Every file diffbench writes goes through `atomic_write`: the content lands in a
temporary file in the same folder and is renamed over the target, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to fill; when the block ends without an error it replaces `out` in one
    rename, so no reader ever sees a half-written folder (the temporary one is removed either way)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    try:  # torch scalars and 0-d tensors
        return obj.item()
    except (AttributeError, ValueError, RuntimeError):
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}") from None


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so the JSON written is strict (RFC 8259 has no
    NaN token; Python writes one that most other readers refuse). None reads back as "no value"."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (non-finite floats written as null; numpy values and paths converted)."""
    return json.dumps(finite(obj), indent=indent, default=lambda o: finite(_json_default(o)), allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, dumps(obj) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by `write_csv` ([] when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short content hash of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def stable_int(*parts: Any) -> int:
    """A 31-bit seed derived from `parts` (the same in every process, unlike hash())."""
    return int(stable_hash(list(parts), 8), 16) & 0x7FFFFFFF


def safe_name(name: str, n: int = 60) -> str:
    """`name` as one path component: characters other than letters, digits and -_.+@ become _, at most the
    last `n` characters kept (a model given as a checkpoint path keeps its most specific part)."""
    out = "".join(c if c.isalnum() or c in "-_.+@" else "_" for c in str(name))[-n:].strip(".")
    return out or "_"


class CorruptFileError(ValueError):
    """A saved or cached file that does not parse or does not match its checksum."""


def checksum(obj: Any) -> str:
    return stable_hash(finite(obj), 64)


def write_checked_json(path: str | Path, obj: Any) -> None:
    """JSON cache entry with the checksum of its content beside it: {"sha256": ..., "data": obj}."""
    write_json(path, {"sha256": checksum(obj), "data": obj})


def read_checked_json(path: str | Path) -> Any:
    """The content of a `write_checked_json` file, verified. Raises CorruptFileError on a truncated file or a
    checksum mismatch (a same-size edit). A file from before checksums were recorded (no envelope) is trusted
    once and rewritten with its checksum, as the adapters and activation stores are."""
    try:
        d = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON (truncated or edited): {e}") from None
    if isinstance(d, dict) and set(d) == {"sha256", "data"}:
        if checksum(d["data"]) != d["sha256"]:
            raise CorruptFileError(f"{path} does not match its recorded checksum (edited or corrupted)")
        return d["data"]
    write_checked_json(path, d)
    return d


@contextmanager
def cache_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive file lock (`.locks/<name>.lock` beside the entry) while a cache entry is checked and, if
    missing, computed: two jobs that need the same product compute it once; the second waits, then finds it
    done. Products are still written by rename, so a reader that takes no lock never sees a partial file."""
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_path = path.parent / ".locks" / f"{path.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        print(f"[diffbench] waiting for another job that is computing {path.name}", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
