"""Concurrent jobs share one cache safely: two processes that need the same product compute it once (the other
waits for the lock, then reuses it), and neither reads a partial file."""

import os
import subprocess
import sys
import textwrap

from diffbench.core.io import cache_lock

RACER = textwrap.dedent("""
    from diffbench.harness.models import checkpoint_dir
    path, ident = checkpoint_dir("tiny-llama")
    print("DIR", path, flush=True)
""")


def test_two_processes_racing_on_one_key_compute_it_once(tmp_path):
    env = {**os.environ, "DIFFBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    prepared = sum(o.count("preparing tiny-llama") for o in outs)
    assert prepared == 1, outs  # one computed it ...
    dirs = {line.split()[1] for o in outs for line in o.splitlines() if line.startswith("DIR ")}
    assert len(dirs) == 1  # ... and both use the same, complete product
    from pathlib import Path

    folder = Path(dirs.pop())
    assert (folder / "diffbench_source.json").exists() and any(folder.glob("*.safetensors"))
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and p.name != ".locks"]  # no temporary folder left


def test_the_lock_is_released_when_the_work_fails(tmp_path):
    target = tmp_path / "entry"
    try:
        with cache_lock(target):
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    with cache_lock(target):  # would wait forever if the failed holder kept it
        pass
