"""`diffbench`: the command line. The main command is a Hydra app.

    diffbench                         # quick suite on smollm2-135m, every stage
    diffbench run suite=full          # same, with Hydra overrides
    diffbench plant|collect|score [overrides]   # one stage (earlier products come from the caches)
    diffbench run stages=[diff] [overrides]     # the diff stage alone (`diffbench diff` is the two-model tool)
    diffbench report RUN_DIR [k=v]    # rescore saved findings and rebuild the report of a run (k=v: e.g. progress=false)
    diffbench report MULTIRUN_DIR     # merge the jobs of a multirun into MULTIRUN_DIR/merged, then score and report it
    diffbench diff model_a=A model_b=B [corpus=FILE] [method=[...]]   # methods on two models of your own (conf/diff.yaml)
    diffbench list                    # registered models, methods, behaviors
    diffbench organisms list|verify|export   # the shipped organism zoo (diffbench organisms -h)
    diffbench evaluate REFERENCE plugins=[my.py] +method.mine.name=NAME   # one new method against a published run
    diffbench -m method=[mean_diff],[random_directions] hydra/launcher=joblib   # Hydra multirun
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import sys
from pathlib import Path

# before torch loads OpenMP: idle threads sleep at barriers instead of spinning, so every core can be used without
# the 2-5x loss beside another busy process (core/env.py: pick_threads has the measurements); a policy already in
# the environment is kept
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..core.registry import UnknownNameError  # noqa: E402

STAGE_WORDS = ("plant", "collect", "diff", "score")


def _fail(msg: str) -> None:
    print(f"diffbench: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..tasks.spec import SpecError
    from .models import ModelNotAvailableError
    from ..core.activations import CorruptStoreError

    # PluginError and usercorpus.CorpusFileError are ValueErrors; FloatingPointError: a planting whose loss diverged
    return (UnknownNameError, ModelNotAvailableError, SpecError, CorruptStoreError, FileNotFoundError, ValueError,
            FloatingPointError)


DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


def _disk_error(e: BaseException, run_dir: Path | None) -> str | None:
    """The message for a full, read-only or unwritable run_dir/cache_dir, or None for any other error. Every product
    is written atomically (core/io.py), so what was finished is whole on disk and a rerun resumes from it."""
    if not isinstance(e, OSError) or e.errno not in DISK_ERRNOS:
        return None
    from ..core.env import cache_dir

    where = f" writing {e.filename}" if e.filename else ""
    folder = f"the run folder {run_dir} and " if run_dir is not None else ""
    return (f"{DISK_ERRNOS[e.errno]}{where}. The run stopped; what it finished is kept in {folder}the cache {cache_dir()} "
            "(partial files are never left behind). Free space or make the folder writable (or pass run_dir=... / "
            "cache_dir=... elsewhere), then rerun the same command to resume from what was kept.")


# what an invocation writes into its run folder before any stage has produced something
BOOKKEEPING = {"config.yaml", "command.txt", ".hydra", "cli.log"}


def _drop_if_empty(run_dir: Path) -> None:
    """Remove a run folder this invocation created if it holds nothing but bookkeeping (a run that failed
    validation, or before its first product), so failed commands do not litter runs/."""
    import shutil

    if run_dir.is_dir() and all(p.name in BOOKKEEPING for p in run_dir.iterdir()):
        logging.shutdown()  # Hydra's file handler holds cli.log open
        shutil.rmtree(run_dir, ignore_errors=True)


def method_overrides(argv: list[str]) -> list[str]:
    """`method.X.params.Y=V` -> `++method.X.params.Y=V`. A method's options live in its config dataclass, so
    conf/method/X.yaml holds no copy of them (`params: {}`) and Hydra would want `+` to add one; the method's
    constructor rejects an unknown option by name, so nothing misspelt slips through."""
    return [f"++{a}" if re.match(r"^method\.[^.=]+\.params\.[^=]+=", a) else a for a in argv]


def _append_command(run_dir: Path, command: str) -> None:
    """Add `command` to the run folder's command.txt (once): a folder may be filled by several invocations (stages run
    alone, resumed runs, rescoring with overrides), and it keeps them all."""
    from ..core.io import atomic_write

    cmd_path = run_dir / "command.txt"
    previous = cmd_path.read_text().splitlines() if cmd_path.exists() else []
    atomic_write(cmd_path, "\n".join([l for l in previous if l.strip() and l != command] + [command]) + "\n")


def _guard_composition() -> None:
    """Check every config Hydra composes (a run, a multirun's master and each of its jobs, `compose` in evaluate)
    before Hydra acts on it: callbacks, logging factories and launchers are instantiated right after composition,
    before the task function runs, so the check cannot wait for the Workspace. `plugins` must come from the
    overrides (the command line), not from a suite or other config file."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf

    from .schema import ConfigError, check_config_is_data, sets_plugins

    original = ConfigLoaderImpl.load_configuration
    if getattr(original, "_diffbench_guard", False):
        return

    def load_configuration(self, config_name, overrides, run_mode, *args, **kwargs):
        cfg = original(self, config_name, overrides, run_mode, *args, **kwargs)
        try:
            check_config_is_data(OmegaConf.to_container(cfg, resolve=False), plugins_allowed=sets_plugins(overrides),
                                 where="a config file, a suite file or a command-line override")
        except ConfigError as e:
            _fail(str(e))  # SystemExit passes through Hydra's run_and_report: exit 2, one message, nothing ran
        _check_writable(cfg)
        return cfg

    load_configuration._diffbench_guard = True
    ConfigLoaderImpl.load_configuration = load_configuration


def _check_writable(cfg) -> None:
    """Hydra creates the run folder before diffbench runs, and a read-only or unwritable place ends in its traceback:
    check the nearest existing folder above hydra.run.dir first (statvfs and access: nothing is written)."""
    from omegaconf import OmegaConf

    try:
        target = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).absolute()
    except Exception:  # an interpolation only Hydra's runtime resolves: Hydra will report it
        return
    folder = next((p for p in [target, *target.parents] if p.exists()), None)
    if folder is None or not folder.is_dir():
        return
    code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES if not os.access(folder, os.W_OK | os.X_OK) else 0
    if code:
        _fail(f"cannot create the run folder {target}: {DISK_ERRNOS[code]} at {folder}. Nothing ran; pass run_dir=... "
              "(a writable place) and run the command again")


def _check_model_choice(argv: list[str]) -> None:
    """`model=X` picks conf/model/X.yaml; Hydra's own error for a missing one ("could not find") names no
    alternative, and `diffbench list` shows registered models that have no such file. Say which to use."""
    import difflib

    if any(a.startswith(("hydra.searchpath", "+hydra.searchpath", "--config-dir", "-cd")) for a in argv):
        return  # the user's own config folders may hold more model files: Hydra resolves them
    from .. import conf
    from .models import MODEL_SOURCES

    files = sorted(p.stem for p in (Path(conf.__file__).parent / "model").glob("*.yaml"))
    for a in argv:
        if not a.startswith("model="):
            continue
        for choice in a.split("=", 1)[1].split(","):  # a multirun sweep: model=a,b
            if choice in files:
                continue
            if choice in MODEL_SOURCES.names() or os.sep in choice:
                _fail(f"model={choice}: there is no conf/model/{choice}.yaml (model= picks one of {', '.join(files)}); "
                      f"for another registered model or a checkpoint folder use model.name={choice}")
            close = difflib.get_close_matches(choice, list(dict.fromkeys([*files, *MODEL_SOURCES.names()])), n=3, cutoff=0.5)
            _fail(f"unknown model {choice!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "") +
                  f". model= picks one of {', '.join(files)}; model.name= takes any of {', '.join(MODEL_SOURCES.names())} "
                  "or the path of a local Hugging Face checkpoint folder")


def _run_hydra(argv: list[str], config_name: str = "config") -> None:
    """The benchmark (conf/config.yaml: the pipeline's stages) or the diff tool (conf/diff.yaml) as a Hydra app."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base=None, config_path="pkg://diffbench.conf", config_name=config_name)
    def app(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from ..core.io import atomic_write
        from . import pipeline

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        fresh = not (run_dir / "config.yaml").exists()  # Hydra made the folder just now for this invocation
        atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        _append_command(run_dir, "diffbench " + ("diff " if config_name == "diff" else "") + " ".join(shlex.quote(a) for a in argv))
        try:
            if config_name == "diff":
                from .difftool import tool as difftool

                difftool.run(cfg, run_dir)
            else:
                pipeline.run(cfg, run_dir, list(cfg.stages))
        except BaseException as e:
            if fresh:
                _drop_if_empty(run_dir)
            if _disk_error(e, run_dir):
                _fail(_disk_error(e, run_dir))
            if isinstance(e, _known_errors()):
                _fail(str(e))
            if isinstance(e, KeyboardInterrupt):
                _fail(f"interrupted; rerun the same command (with run_dir={run_dir}) to resume from the caches")
            raise

    if config_name == "config":
        _check_model_choice(argv)
    sys.argv = [sys.argv[0], *method_overrides(argv)]
    _guard_composition()
    app()


def _report(run_dir: str, overrides: list[str]) -> None:
    """Rescore a run folder's saved findings. `overrides` (key=value, e.g. progress=false or scoring.strong.k=10)
    change its saved config for this and later rescoring: they are validated like a run's options before any work,
    written into its config.yaml and the command is appended to its command.txt, so the folder names the settings its
    scores come from."""
    from omegaconf import DictConfig, OmegaConf, open_dict

    from ..core.io import atomic_write, read_json
    from . import pipeline
    from .merge import is_multirun, merge
    from .schema import check_config, check_config_is_data, sets_plugins

    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        _fail(f"usage: diffbench report RUN_DIR [key=value ...]; not a key=value override: {' '.join(bad)}")
    path = Path(run_dir)
    try:
        if is_multirun(path):  # a Hydra multirun folder: merge its jobs into one run folder first
            path = merge(path)
        if not (path / "config.yaml").exists():
            _fail(f"{path} is not a diffbench run folder (no config.yaml) nor a multirun folder (numbered job folders)")
        try:
            cfg = OmegaConf.load(path / "config.yaml")
        except Exception as e:  # a damaged or hand-edited file: YAML syntax, duplicate keys, interpolation grammar
            _fail(f"{path / 'config.yaml'} is not a valid run config: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if not isinstance(cfg, DictConfig):
            _fail(f"{path / 'config.yaml'} is not a valid run config: a mapping was expected, got a {type(cfg).__name__}")
        # a run folder is data someone may have sent you: nothing in it may import or call code, and its `plugins`
        # are not imported; only plugins=[...] on this command line are (your explicit choice)
        folder_plugins = list(cfg.get("plugins") or [])
        saved = OmegaConf.to_container(cfg, resolve=False)
        check_config_is_data(saved, plugins_allowed=True, where=f"{path / 'config.yaml'}")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
            check_config_is_data(OmegaConf.to_container(cfg, resolve=False), plugins_allowed=True, where="a command-line override")
            check_config(OmegaConf.to_container(cfg, resolve=True))  # a misspelt key fails here, before any work
            atomic_write(path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            _append_command(path, "diffbench report " + " ".join(shlex.quote(a) for a in [run_dir, *overrides]))
        own_plugins = sets_plugins(overrides)
        if not own_plugins:
            with open_dict(cfg):
                cfg.plugins = []
        evaluated = (path / "scores.json").exists() and "evaluated" in read_json(path / "scores.json")
        # an evaluate folder holds the reference's published rows, not their findings: rebuild its report only
        pipeline.run(cfg, path, ["report"] if evaluated else ["score", "report"])
    except Exception as e:
        if _disk_error(e, path):
            _fail(_disk_error(e, path))
        if not isinstance(e, _known_errors()):
            raise
        hint = ""
        if folder_plugins and not own_plugins:
            hint = (f"\n  this run used plugins={folder_plugins}, which `diffbench report` does not import from a run folder; "
                    f"if you trust them: diffbench report {shlex.quote(run_dir)} 'plugins=[{','.join(folder_plugins)}]'")
        _fail(str(e) + hint)


def _evaluate(reference: str, overrides: list[str]) -> None:
    """Compose the user's methods (and plug-ins) like a run's, then `evaluate.run` them against the reference."""
    import time

    from hydra import compose, initialize_config_module

    from . import evaluate

    own_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")), None)
    overrides = [o for o in overrides if not o.startswith("run_dir=")]
    _guard_composition()
    try:
        with initialize_config_module(config_module="diffbench.conf", version_base=None):
            cfg = compose("config", overrides=[*method_overrides(overrides), "run_dir=unused"])
        name = Path(reference).name if "/" in reference else reference
        run_dir = Path(own_dir or f"runs/evaluate-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if cfg.get("plugins"):
            from ..core.plugins import load_plugins

            load_plugins(list(cfg.plugins))  # a method the overrides name must be registered before anything runs
        evaluate.run(reference, cfg, run_dir)
        _append_command(run_dir, "diffbench evaluate " + " ".join(shlex.quote(a) for a in [reference, *overrides]))
    except _known_errors() as e:
        _fail(str(e))


def _list() -> None:
    from ..methods import load_all_methods
    from ..core import METHODS
    from ..tasks.spec import available_behaviors
    from .models import MODEL_SOURCES

    load_all_methods()
    print("models:    " + ", ".join(MODEL_SOURCES.names()) + "  (or a local HF checkpoint path)")
    print("methods:   " + ", ".join(METHODS.names()))
    from ..tasks.families import families, family_behaviors

    print("behaviors: " + ", ".join(available_behaviors()))
    print(f"families:  " + ", ".join(f"{f} ({len(family_behaviors(f))})" for f in families()) + "  (behaviors <family>__<id>)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "transformers.modeling_utils", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return
    if argv and argv[0] == "report":
        if len(argv) < 2:
            _fail("usage: diffbench report RUN_DIR [key=value ...]")
        return _report(argv[1], argv[2:])
    if argv and argv[0] == "list":
        return _list()
    if argv and argv[0] == "evaluate":
        if len(argv) < 2 or "=" in argv[1]:
            _fail("usage: diffbench evaluate REFERENCE [plugins=[file.py]] [+method.KEY.name=NAME | method=[NAME]] [run_dir=DIR]; "
                  "REFERENCE is quick, full, zoo or a run folder")
        return _evaluate(argv[1], argv[2:])
    if argv and argv[0] == "organisms":
        from .plant.zoo_cli import main as organisms_main

        sys.exit(organisms_main(argv[1:]))
    if argv and argv[0] == "diff":
        missing = [k for k in ("model_a", "model_b") if not any(a.startswith(k + "=") for a in argv[1:])]
        if missing:
            _fail(f"diffbench diff needs {' and '.join(m + '=...' for m in missing)} (a model name, a checkpoint folder or "
                  "an adapter folder); options: conf/diff.yaml")
        return _run_hydra(argv[1:], "diff")
    if argv and argv[0] == "run":
        argv = argv[1:]
    elif argv and argv[0] in STAGE_WORDS:
        argv = [f"stages=[{argv[0]}]", *argv[1:]]
    _run_hydra(argv)


if __name__ == "__main__":
    main()
