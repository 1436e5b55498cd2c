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


KILLED = textwrap.dedent("""
    import os, signal
    import diffbench.harness.models as models
    # killed mid-write: the weights are in the temporary folder, the marker that makes the product valid is not
    models.write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    models.checkpoint_dir("tiny-llama")
""")


def test_a_job_killed_mid_write_leaves_nothing_a_later_job_reads_as_valid(tmp_path):
    """SIGKILL between writing a product's files and its marker (no cleanup runs): the lock dies with the process,
    the half-written folder is never taken for the product, and the next job prepares it in full."""
    import signal
    from pathlib import Path

    env = {**os.environ, "DIFFBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    models = tmp_path / "cache" / "models"
    assert not [p for p in models.iterdir() if p.name.startswith("tiny-llama")]  # nothing under the product's name
    later = subprocess.run([sys.executable, "-c", RACER], env=env, capture_output=True, text=True, timeout=600)
    assert later.returncode == 0, later.stderr[-2000:]
    assert "preparing tiny-llama" in later.stdout  # computed again, not read from the partial folder
    folder = Path(next(line.split()[1] for line in later.stdout.splitlines() if line.startswith("DIR ")))
    assert (folder / "diffbench_source.json").exists() and any(folder.glob("*.safetensors"))
