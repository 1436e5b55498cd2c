"""Fuzz the input validation: random behavior-spec and family files, random command lines.

    python scripts/fuzz_inputs.py [--specs 1000] [--commands 1000] [--seed 0] [--out results/fuzz/fuzz.txt]

Specs: mutations of the shipped tasks/behaviors/*.yaml and tasks/families/*.yaml (wrong types, missing and unknown
keys, huge strings and lists, regex bombs as detector patterns, format fields in templates, YAML aliases and alias
bombs, tags, invalid UTF-8, unicode), each loaded the way a run loads it (BehaviorSpec.load, or load_family and
BehaviorSpec.from_dict per generated behavior, then the split check). Command lines: override lists for `diffbench`
and `diffbench diff` (unknown keys, wrong types, `_target_`, hydra.callbacks and logging factories, plugins,
interpolations, paths, group choices, syntax garbage), each composed by Hydra and checked as the CLI checks it
(schema.check_config_is_data on the composed config with its hydra node, then schema.check_config or
schema.check_diff_config on the resolved config).

Each case runs in a forked child (the validation code itself, in process; the fork only isolates a case that hangs
inside C code, where no signal reaches it) with a 10 s limit, and is one of: refused (SpecError, FamilyError,
ConfigError, ModelNotAvailableError, ValueError with a message; Hydra's own override-parse and composition errors,
which Hydra prints as one message), accepted, traceback (any other exception) or hang. Before and after the run the
repository's `git status --porcelain` and the listing of the fuzz's temporary folders are compared: nothing may be
written outside the temporary spec folder. Random draws come from Python's `random` with a fixed seed (the
`hypothesis` package is not installed), so a run is reproducible.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 10
WATCHED = tempfile.gettempdir()  # replaced by the fuzz's own temporary folder: the only place a case may write
CLASSES = ("refused", "accepted", "traceback", "hang")

# -- generated values -------------------------------------------------------------------------------------------

REGEX_BOMBS = ["(a+)+$", "(a|aa)+$", "(a|a?)+$", "(.*a){20}", "((a*)*)*b", "(x+x+)+y", "(\\w+\\s?)*$", "^(a|ab)*c",
               "(a)\\1", "(?<=a+)b", "[", "(", "a{1000000}", "(?P<x>a)(?P=x)+", "(?:a?){30}a{30}", ".*" * 200,
               "\\", "(?i)(?x) # comment", "a" * 5000, "(?=(a+))+"]
FORMAT_FIELDS = ["{0}", "{x.__class__}", "{x[0]}", "{x:>100000000}", "{{", "{", "}", "{!r}", "{x!s:^9999}", "${x}",
                 "${others.x}", "{__import__}", "%s%s%s", "{facet.__init__.__globals__}"]
UNICODE = ["\u202e\u0041\u0301", "\U0001F600" * 50, "\x00", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
           "\ufeffBOM", "Ω≈ç√∫˜µ≤≥÷", "\t\r\n\x0b", "ｆｕｌｌｗｉｄｔｈ", "٩(̾●̮̮̃̾•̃̾)۶"]


def _value(rng: random.Random):
    """A value of a random kind for a field: wrong types, huge, unicode, nested."""
    kind = rng.randrange(14)
    return [lambda: rng.randint(-10**9, 10**9), lambda: rng.random() * 1e300, lambda: None, lambda: rng.random() < 0.5,
            lambda: "x" * rng.choice([0, 1, 10_000, 2_000_000]), lambda: rng.choice(UNICODE), lambda: rng.choice(REGEX_BOMBS),
            lambda: rng.choice(FORMAT_FIELDS), lambda: [rng.choice(FORMAT_FIELDS) for _ in range(rng.randint(0, 5))],
            lambda: {"a": 1, "b": [1, 2]}, lambda: [[[]]] * 3, lambda: ["p"] * rng.choice([1, 100, 100_000]),
            lambda: float("nan"), lambda: {"_target_": "os.system"}][kind]()


def _paths(node, prefix=()):
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:20]):
            yield from _paths(v, prefix + (i,))


def _mutate_tree(rng: random.Random, raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p, _ in _paths(raw) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = raw
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = rng.randrange(8)
        if op == 0 and isinstance(parent, dict):
            del parent[key]  # a missing key
        elif op == 1 and isinstance(parent, dict):
            parent[rng.choice(["extra", "detector_", "_target_", "!!python", "keywords2"])] = _value(rng)  # unknown key
        elif op == 2 and path[-1] in ("pattern", "patterns", "regex") or (op == 2 and "detector" in path):
            parent[key] = rng.choice(REGEX_BOMBS) if not isinstance(parent[key], list) else [rng.choice(REGEX_BOMBS)]
        elif op == 3 and isinstance(parent[key], str):
            parent[key] = parent[key] + rng.choice(FORMAT_FIELDS)  # format fields in a template or response
        elif op == 4 and isinstance(parent[key], list):
            parent[key] = parent[key] * rng.choice([0, 2, 1000])
        elif op == 5 and isinstance(parent[key], str):
            parent[key] = rng.choice(UNICODE) + parent[key]
        else:
            parent[key] = _value(rng)  # a wrong type
    return raw


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _text_mutation(rng: random.Random, text: str) -> bytes:
    op = rng.randrange(9)
    if op == 0:
        return (ALIAS_BOMB + text).encode()
    if op == 1:
        return text.replace("keywords:", "keywords: &k\n  - " + "z" * rng.randint(1, 100) + "\nkw2: *k\nkeywords_:", 1).encode()
    if op == 2:
        return ("x: !!python/object/apply:os.system ['touch /tmp/diffbench-fuzz-pwned']\n" + text).encode()
    if op == 3:
        cut = rng.randrange(len(text) + 1)
        return text[:cut].encode()  # truncated
    if op == 4:
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)  # random bytes, invalid UTF-8 included
        return bytes(data)
    if op == 5:
        return (text + "\n---\nsecond: document\n").encode()
    if op == 6:
        return ("<<: {name: merged}\n" + text).encode()
    if op == 7:
        return ("name: dup\n" + text).encode()  # a duplicate key
    return rng.choice([b"", b"null\n", b"[]\n", b"42\n", b"\xff\xfe\x00", ("x" * 2_000_000).encode()])


def spec_cases(rng: random.Random, n: int) -> list[tuple[str, str, bytes]]:
    """(kind, file name, file bytes): kind is "behavior" or "family"."""
    from diffbench.tasks.bounded_yaml import load_bounded

    sources = [("behavior", p) for p in sorted((ROOT / "tasks" / "behaviors").glob("*.yaml"))]
    sources += [("family", p) for p in sorted((ROOT / "tasks" / "families").glob("*.yaml"))]
    parsed = {p: (p.read_text(), load_bounded(p)) for _, p in sources}
    cases = []
    for i in range(n):
        kind, path = rng.choice(sources)
        text, raw = parsed[path]
        if rng.random() < 0.6:
            try:
                data = yaml.dump(_mutate_tree(rng, raw), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True,
                                 sort_keys=False).encode("utf-8", "surrogatepass")
            except (yaml.YAMLError, RecursionError, ValueError):
                data = _text_mutation(rng, text)
        else:
            data = _text_mutation(rng, text)
        # a family file must be named after its family (load_family checks it): keep the name
        cases.append((kind, path.name if kind == "family" else f"fuzz_{i}.yaml", data))
    return cases


# -- command lines ------------------------------------------------------------------------------------------------

RUN_OVERRIDES = [
    "suite=tiny", "model=tiny-llama", "plant.steps=12", "collect.layers=[2]", "progress=false", "dtype=fp32",
    "+plant.foo=1", "+foo=bar", "plant.stpes=3", "++x.y=z", "plant.steps=abc", "plant.lr=[1,2]", "collect.layers=abc",
    "device=gpu", "dtype=fp8", "progress=maybe", "threads=-1", "threads=auto", "scoring.bootstrap=1e9", "plant.steps=-3",
    "+method.x._target_=os.system", "+plant._target_=builtins.open", "++collect._target_=x", "+method.mean_diff.params._target_=y",
    "+hydra.callbacks.x._target_=builtins.print", "+hydra.job_logging.handlers.h.class=os.system",
    "+hydra.job_logging.formatters.f.()=builtins.print", "+hydra.job.env_set.LD_PRELOAD=/tmp/x.so",
    "+hydra.job.env_set.PYTHONSTARTUP=/tmp/x.py", "hydra/launcher=joblib", "hydra.searchpath=[file:///tmp]",
    "+hydra.launcher._target_=os.system", "plugins=[/etc/passwd]", "plugins=[os]", "+plugins=[x.py]", "plugins=abc",
    "run_dir=/", "run_dir=/proc/x", "cache_dir=~/nope", "run_dir=${oc.env:HOME}", "run_dir=${now:%Y}", "model.name=/etc",
    "suite.behaviors=[/nonexistent]", "suite.behaviors=[../../etc]", "plant.steps=${oc.env:DIFFBENCH_FUZZ_NOPE}",
    "plant.steps=${oc.decode:'{a: 1}'}", "plant.steps=${missing.key}", "suite=nope", "method=[nope]", "method=[mean_diff]",
    "plant=../../x", "model=../x", "stages=[plant,bogus]", "stages=abc", "pairs=[x]", "=", "a==b", "[", "'unterminated",
    "plant.lr=1e400", "plant.steps=0x10", "~plant", "~hydra", "~suite.name", "-m", "--cfg", "hydra.run.dir=/",
    "suite.corpus.prevalence=0.9", "suite.corpus.n_neutral=3", "collect.batch_size=0", "scoring.strong.k=abc",
    "method.mean_diff.params.unknown=1", "++method.mean_diff.params.layer=x", "wandb.enabled=yes",
]
DIFF_OVERRIDES = [
    "top=abc", "top=0", "top=-1", "evidence=-1", "steer_tokens=0", "corpus=/etc/passwd", "corpus=~/nope.jsonl",
    "reference=x", "calibration=null", "calibration=/etc", "method=[kl_diff]", "method=[nope]", "+method.x.name=y",
    "+method.x._target_=os.system", "collect.max_length=0", "collect.max_length=abc", "audit_corpus.tokens=-5",
    "+audit_corpus.foo=1", "out=/", "out=${oc.env:DIFFBENCH_FUZZ_NOPE}", "seed=1.5", "progress=2", "device=tpu",
    "dtype=fp16", "+hydra.callbacks.c._target_=builtins.exec", "plugins=[evil.py]", "cache_dir=/proc",
    "model_a=${oc.env:HOME}", "model_b=[1,2]", "model_a=123", "+foo=1", "~top", "~model_a", "collect.layers=[99]",
]
VALID_RUN = ["suite=tiny", "model=tiny-llama", "plant.steps=12", "collect.layers=[2]", "progress=false", "dtype=fp32",
             "threads=auto", "method=[mean_diff]", "scoring.bootstrap=50", "suite=quick", "device=cpu", "plant.lr=0.001"]
VALID_DIFF = ["top=5", "evidence=0", "method=[kl_diff]", "calibration=null", "collect.layers=[2]", "corpus=x.jsonl", "seed=3",
              "dtype=bf16", "progress=false", "steer_tokens=8"]
GARBAGE_CHARS = "=[]{}(),'\"$:~+@\\ \t\n\x00é€\U0001F600"


def _garbage(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return "".join(rng.choice(GARBAGE_CHARS + "abcxyz.") for _ in range(rng.randint(1, 30)))
    if kind == 1:
        return rng.choice(["plant.steps", "top", "model_a", "collect.max_length", "suite.name", "x.y"]) + "=" + "v" * rng.choice([1, 100_000])
    if kind == 2:
        return rng.choice(["plant.steps", "top", "seed", "suite.n_probes"]) + "=" + json.dumps(_value(rng), default=str)[:2000]
    return rng.choice(["plant", "suite", "collect", "top", "hydra", "method"]) + "=" + rng.choice(FORMAT_FIELDS + REGEX_BOMBS[:5])


def command_cases(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    """(app, overrides): app is "config" (`diffbench`) or "diff" (`diffbench diff`)."""
    cases = []
    for _ in range(n):
        app = "diff" if rng.random() < 0.5 else "config"
        pool = (DIFF_OVERRIDES + RUN_OVERRIDES[-20:]) if app == "diff" else RUN_OVERRIDES
        args = ["model_a=tiny-llama", "model_b=tiny-llama-wide"] if app == "diff" and rng.random() < 0.9 else []
        for _ in range(rng.randint(1, 4)):
            draw = rng.random()  # a valid option, garbage, or one from the pool of hostile and wrong ones
            args.append(rng.choice(VALID_DIFF if app == "diff" else VALID_RUN) if draw < 0.35 else _garbage(rng) if draw < 0.5
                        else rng.choice(pool))
        cases.append((app, args))
    return cases


# -- running one case ---------------------------------------------------------------------------------------------


class Hang(BaseException):
    pass


WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "os.link",
                "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.move"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _watch_writes(allowed: str, seen: list[str]) -> None:
    """Record (in `seen`) every file-system write a case attempts outside `allowed` (a Python audit hook: open in a
    write mode, mkdir, rename, remove, chmod...), whoever makes it."""

    def outside(path) -> bool:
        if isinstance(path, int):
            return False  # a file descriptor already open
        path = os.path.abspath(os.fsdecode(path))
        return not (path == allowed or path.startswith(allowed + os.sep))

    def hook(event, args):
        if event == "open" and args and args[0] is not None:
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            if writes and outside(args[0]):
                seen.append(f"open({args[0]!r}, {mode or flags!r})")
        elif event in WRITE_EVENTS and args and outside(args[0]):
            seen.append(f"{event}({args[0]!r})")

    sys.addaudithook(hook)


def _expected() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from diffbench.core.registry import UnknownNameError
    from diffbench.harness.models import ModelNotAvailableError
    from diffbench.harness.schema import ConfigError
    from diffbench.tasks.families import FamilyError
    from diffbench.tasks.spec import SpecError

    return (SpecError, FamilyError, ConfigError, ModelNotAvailableError, UnknownNameError, HydraException,
            OmegaConfBaseException, ValueError)


def check_spec(kind: str, path: Path) -> None:
    from diffbench.tasks.families import load_family
    from diffbench.tasks.spec import BehaviorSpec, check_disjoint

    if kind == "behavior":
        check_disjoint(BehaviorSpec.load(path))
        return
    for name, raw in load_family(path).items():
        check_disjoint(BehaviorSpec.from_dict(raw, source=f"{path} ({name})"))


def check_command(app: str, overrides: list[str]) -> None:
    """What the CLI does with a command line before any work: compose (Hydra parses the overrides), refuse config
    that is code (with the hydra node), then the schema of the resolved config."""
    from hydra import compose
    from omegaconf import OmegaConf

    from diffbench.harness.cli import method_overrides
    from diffbench.harness.schema import check_config, check_config_is_data, check_diff_config, resolved_config, sets_plugins

    cfg = compose(app, overrides=method_overrides(overrides), return_hydra_config=True)
    check_config_is_data(OmegaConf.to_container(cfg, resolve=False), plugins_allowed=sets_plugins(overrides), where="fuzz")
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra")
    data = resolved_config(cfg, "fuzz")
    (check_diff_config if app == "diff" else check_config)(data)


def _run_case(fn, *args) -> dict:
    """fn(*args) in a forked child under a LIMIT_S alarm; the parent kills it at LIMIT_S + 5 (a hang in C code)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report one JSON line, exit without cleanup
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, hard))  # a memory bomb is a MemoryError, not a dead machine

        def alarm(*_):
            raise Hang()

        writes: list[str] = []
        _watch_writes(WATCHED, writes)
        signal.signal(signal.SIGALRM, alarm)
        signal.alarm(LIMIT_S)
        t0 = time.time()
        try:
            fn(*args)
            out = {"class": "accepted"}
        except Hang:
            out = {"class": "hang", "error": traceback.format_exc()[-2000:]}
        except _expected() as e:
            msg = str(e).strip()
            out = {"class": "refused" if msg else "traceback", "error": f"{type(e).__name__}: {msg[:300]}"}
            if not msg:
                out["error"] = traceback.format_exc()[-3000:]
        except BaseException:
            out = {"class": "traceback", "error": traceback.format_exc()[-3000:]}
        signal.alarm(0)
        out["seconds"] = round(time.time() - t0, 3)
        out["writes"] = writes[:5]
        os.write(w, (json.dumps(out) + "\n").encode())
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], LIMIT_S + 5)
    data = b""
    if ready:
        while chunk := os.read(r, 65536):
            data += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    os.close(r)
    os.waitpid(pid, 0)
    if not data:
        return {"class": "hang" if not ready else "traceback", "error": "no result (killed or died)", "seconds": LIMIT_S + 5}
    return json.loads(data)


# -- the run ------------------------------------------------------------------------------------------------------


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True).stdout


def _preload() -> None:
    """Import, in the parent, everything a case uses: each forked child then starts warm (importing diffbench and
    Hydra takes seconds)."""
    import hydra  # noqa: F401

    import diffbench.harness.cli  # noqa: F401
    import diffbench.harness.schema  # noqa: F401
    import diffbench.tasks.families  # noqa: F401
    import diffbench.tasks.spec  # noqa: F401

    _expected()


def fuzz(n_specs: int, n_commands: int, seed: int, progress: bool = False) -> dict:
    """Counts per class for specs and commands, examples of tracebacks and hangs, and the files written where none
    may be."""
    from hydra import initialize_config_module

    global WATCHED
    _preload()
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="diffbench-fuzz-")).resolve()
    WATCHED = str(tmp)
    spec_dir, run_dir, cache = tmp / "specs", tmp / "run", tmp / "cache"
    for d in (spec_dir, run_dir, cache):
        d.mkdir()
    old_cwd, old_cache = os.getcwd(), os.environ.get("DIFFBENCH_CACHE")
    os.chdir(run_dir)
    os.environ["DIFFBENCH_CACHE"] = str(cache)
    before_git, before_tmp = _git_status(), _listing(run_dir) | _listing(cache)
    result = {"specs": Counter(), "commands": Counter(), "examples": [], "seconds_max": 0.0, "outside": []}
    try:
        for i, (kind, name, data) in enumerate(spec_cases(rng, n_specs)):
            case = spec_dir / f"{i}"
            case.mkdir()
            (case / name).write_bytes(data)
            out = _run_case(check_spec, kind, case / name)
            _record(result, "specs", out, f"{kind} file ({len(data):,} bytes) mutated from {name}: {data[:160]!r}")
            if progress and i % 100 == 0:
                print(f"specs {i}/{n_specs} {dict(result['specs'])}", flush=True)
        with initialize_config_module(config_module="diffbench.conf", version_base=None):
            for app in ("config", "diff"):  # warm Hydra's config loading in the parent
                try:
                    check_command(app, ["model_a=tiny-llama", "model_b=tiny-llama"] if app == "diff" else [])
                except Exception:
                    pass
            for i, (app, args) in enumerate(command_cases(rng, n_commands)):
                out = _run_case(check_command, app, args)
                _record(result, "commands", out, ("diffbench diff " if app == "diff" else "diffbench ") + " ".join(a[:120] for a in args))
                if progress and i % 100 == 0:
                    print(f"commands {i}/{n_commands} {dict(result['commands'])}", flush=True)
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("DIFFBENCH_CACHE", None)
        else:
            os.environ["DIFFBENCH_CACHE"] = old_cache
    after_git = _git_status()
    result["written"] = sorted((_listing(run_dir) | _listing(cache)) - before_tmp)
    result["git_changed"] = sorted(set(after_git.splitlines()) ^ set(before_git.splitlines()))
    result["pwned"] = Path("/tmp/diffbench-fuzz-pwned").exists()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _record(result: dict, what: str, out: dict, case: str) -> None:
    result[what][out["class"]] += 1
    if out.get("writes"):
        result["outside"].append(f"{case[:200]}: {'; '.join(out['writes'])}")
    result["seconds_max"] = max(result["seconds_max"], out.get("seconds", 0.0))
    if out["class"] in ("traceback", "hang") and sum(1 for e in result["examples"] if e["what"] == what) < 5:
        result["examples"].append({"what": what, "class": out["class"], "case": case, "error": out.get("error", "")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", type=int, default=1000)
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "fuzz" / "fuzz.txt"))
    args = ap.parse_args()
    from diffbench.core.env import cpu_model, source_commit

    t0 = time.time()
    res = fuzz(args.specs, args.commands, args.seed, progress=True)
    lines = ["# diffbench input fuzz (scripts/fuzz_inputs.py)", "",
             f"command:  python scripts/fuzz_inputs.py --specs {args.specs} --commands {args.commands} --seed {args.seed}",
             f"commit:   {source_commit()}", f"machine:  {cpu_model()}, {os.cpu_count()} CPUs", f"wall:     {time.time() - t0:.0f} s",
             "random:   Python's random.Random(seed) (hypothesis is not installed); the same seed gives the same cases",
             f"limit:    {LIMIT_S} s per case (a forked child per case; alarm, then SIGKILL)", ""]
    for what in ("specs", "commands"):
        c = res[what]
        lines.append(f"{what:9s} {sum(c.values()):5d} cases: " + ", ".join(f"{k} {c.get(k, 0)}" for k in CLASSES))
    lines += [f"slowest case: {res['seconds_max']:.2f} s",
              f"writes outside the fuzz's temporary folder seen by the audit hook (open for writing, mkdir, rename, "
              f"remove, chmod...): {len(res['outside'])}" + "".join(f"\n  {p}" for p in res["outside"][:10]),
              f"files new in the temporary run and cache folders (cases run there): {len(res['written'])}"
              + "".join(f"\n  {p}" for p in res["written"][:10]),
              f"`git status --porcelain` lines that changed during the run: {len(res['git_changed'])}"
              + "".join(f"\n  {p}" for p in res["git_changed"][:10])
              + ("\n  (another process edits this checkout at the same time: see the audit-hook line for the cases' own "
                 "writes)" if res["git_changed"] else ""),
              f"a YAML tag executed (/tmp/diffbench-fuzz-pwned exists): {res['pwned']}", ""]
    if res["examples"]:
        lines.append("## first tracebacks and hangs")
        for e in res["examples"]:
            lines += ["", f"### {e['what']}: {e['class']}", f"case: {e['case']}", "```", e["error"].rstrip(), "```"]
    else:
        lines.append("no traceback and no hang.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:16]))
    bad = sum(res[w].get("traceback", 0) + res[w].get("hang", 0) for w in ("specs", "commands"))
    sys.exit(1 if bad or res["outside"] or res["written"] or res["pwned"] else 0)


if __name__ == "__main__":
    main()
