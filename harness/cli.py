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
    diffbench run --help | diffbench diff --help   # the main options and their defaults (--help-config: all of them)
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
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "the operation is not permitted"}


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
    # os.path.exists, not Path.exists: inside a folder that cannot be entered the latter raises PermissionError
    folder = next((p for p in [target, *target.parents] if os.path.exists(p)), None)
    if folder is None or not os.path.isdir(folder):
        return
    code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES if not os.access(folder, os.W_OK | os.X_OK) else 0
    if code:
        _fail(f"cannot create the run folder {target}: {DISK_ERRNOS[code]} at {folder}. Nothing ran; pass run_dir=... "
              "(a writable place) and run the command again")


def conf_choices(group: str) -> list[str]:
    """The options of a config group: the names of conf/<group>/*.yaml."""
    from .. import conf

    return sorted(p.stem for p in (Path(conf.__file__).parent / group).glob("*.yaml"))


def unknown_name(what: str, name: str, known: list[str], more: list[str] = ()) -> str:
    """`unknown <what> 'x' (did you mean y?). Known: ...`: one message for a misspelt model, method, suite or command."""
    import difflib

    close = difflib.get_close_matches(name, list(dict.fromkeys([*known, *more])), n=3, cutoff=0.5)
    return f"unknown {what} {name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "") + f". Known: {', '.join(known)}"


CHOICE_GROUPS = ("model", "suite", "plant", "method")  # config groups picked by `group=name` (or `group=[a,b]`)


def _check_choices(argv: list[str], groups: tuple[str, ...] = CHOICE_GROUPS) -> None:
    """`model=X`, `suite=X`, `plant=X`, `method=[X,Y]` pick files of conf/<group>/; Hydra's own error for a missing one
    prints its search path and names no alternative. Name the known options and the closest match instead."""
    if any(a.startswith(("hydra.searchpath", "+hydra.searchpath", "--config-dir", "-cd")) for a in argv):
        return  # the user's own config folders may hold more files: Hydra resolves them
    from .models import MODEL_SOURCES

    for a in argv:
        group, eq, value = a.partition("=")
        if not eq or group not in groups:
            continue
        known = conf_choices(group)
        # a list (method=[a,b]) or a multirun sweep (model=a,b; method=[a],[b]); null/[] choose nothing
        for choice in re.findall(r"[^\[\],\s]+", value):
            if choice in known or choice == "null":
                continue
            if group == "model" and (choice in MODEL_SOURCES.names() or os.sep in choice):
                _fail(f"model={choice}: there is no conf/model/{choice}.yaml (model= picks one of {', '.join(known)}); "
                      f"for another registered model or a checkpoint folder use model.name={choice}")
            more = MODEL_SOURCES.names() if group == "model" else []
            tail = {"model": f". model.name= takes any of {', '.join(MODEL_SOURCES.names())} or the path of a local Hugging "
                             "Face checkpoint folder",
                    "method": f" (conf/method/*.yaml; your own: plugins=[file.py] +method.KEY.name=NAME)"}.get(group, f" (conf/{group}/*.yaml)")
            _fail(unknown_name(group, choice, known, more).replace(". Known: ", f". {group}= picks one of ", 1) + tail)


def _run_hydra(argv: list[str], config_name: str = "config") -> None:
    """The benchmark (conf/config.yaml: the pipeline's stages) or the diff tool (conf/diff.yaml) as a Hydra app."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base=None, config_path="pkg://diffbench.conf", config_name=config_name)
    def app(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from ..core.io import atomic_write
        from . import pipeline

        from .schema import ConfigError, resolved_config

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        fresh = not (run_dir / "config.yaml").exists()  # Hydra made the folder just now for this invocation
        try:  # an override that does not resolve (${oc.env:NOPE}) is one message, and leaves no run folder behind
            resolved_config(cfg, "a config file or a command-line override")
        except ConfigError as e:
            if fresh:
                _drop_if_empty(run_dir)
            _fail(str(e))
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

    _check_choices(argv, CHOICE_GROUPS if config_name == "config" else ("method", "nway_method"))
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
    _check_choices(overrides, ("method",))
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
    from ..core.nway import NWAY_METHODS

    print("N-way:     " + ", ".join(NWAY_METHODS.names()) + "  (nway_method=[...]: suites with groups, diff models=[...])")
    from ..tasks.families import families, family_behaviors

    print("behaviors: " + ", ".join(available_behaviors()))
    print(f"families:  " + ", ".join(f"{f} ({len(family_behaviors(f))})" for f in families()) + "  (behaviors <family>__<id>)")


COMMANDS = {"run": "the benchmark (the default)", "plant": "one stage", "collect": "one stage", "diff": "two models of your own",
            "score": "one stage", "report": "rescore a run folder", "list": "models, methods, behaviors",
            "organisms": "the shipped zoo", "evaluate": "one new method against a reference", "help": "this list"}
HELP_FLAGS = ("-h", "--help")
NWAY_OUT = "out='runs/diff-nway-${path_name:${models.0}}-${now:%Y%m%d-%H%M%S}'"  # `diffbench diff models=[...]`'s folder (quoted: a nested interpolation)
FULL_CONFIG = "--help-config"  # = Hydra's `--cfg job`: the whole composed config, every option with its value


def _conf_file(name: str) -> dict:
    """conf/<name>.yaml as written (not composed): the defaults a usage text names."""
    from omegaconf import OmegaConf

    from .. import conf

    return OmegaConf.to_container(OmegaConf.load(Path(conf.__file__).parent / f"{name}.yaml"), resolve=False)


def _group_defaults(cfg: dict) -> dict:
    return {k: v for d in cfg.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}


def usage(command: str) -> str:
    """The short `--help` of `diffbench run` (and the stage words) or `diffbench diff`: what it does, the main options with
    their defaults (read from conf/config.yaml / conf/diff.yaml, so they cannot drift), an example, the full config."""
    show = lambda v: "null" if v is None else ("[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v))
    if command == "diff":
        c = _conf_file("diff")
        opts = [("model_a=A model_b=B", "required: a registered name (diffbench list), a Hugging Face checkpoint folder or a PEFT adapter folder"),
                ("models=[A,B,C,...]", f"instead: N-way, 2..8 models of one architecture; nway_method={show(_group_defaults(c)['nway_method'])}"),
                (f"corpus={show(c['corpus'])}", "null: the audit corpus answered by model A; or a .jsonl ({prompt, response} or {text}) or text file"),
                ("method=[...]", "default: chosen per pair kind (same architecture: the packaged reference's methods that beat "
                                 "the floors; across architectures: dfc and those of them that apply); names: conf/method/*.yaml"),
                (f"top={c['top']}", "findings kept per method"),
                (f"evidence={c['evidence']}", "findings per method with steered continuations (0: none)"),
                (f"calibration={show(c['calibration'])}", "null-pair flag thresholds: packaged, a run's flag_thresholds.json, or null"),
                (f"out={c['out']}", "the output folder"),
                (f"device={c['device']} dtype={c['dtype']} cache_dir={show(c['cache_dir'])}", "")]
        head = ("usage: diffbench diff model_a=A model_b=B [key=value ...]   (N-way: diffbench diff models=[A,B,...] ...)\n\n"
                "Runs model-diffing methods on two models of your own (no planting, no ground truth) and writes findings.md,\n"
                "summary.json and html/index.html: each finding with its side, tokens, top corpus snippets and steered continuations.")
        example = "diffbench diff model_a=smollm2-135m model_b=/path/to/adapter corpus=chats.jsonl method=[kl_diff,logprob_diff]"
        more = "conf/diff.yaml"
    else:
        c = _conf_file("config")
        g = _group_defaults(c)
        opts = [(f"suite={g['suite']}", f"one of {', '.join(conf_choices('suite'))} (conf/suite/*.yaml)"),
                (f"model={g['model']}", f"one of {', '.join(conf_choices('model'))}; model.name=PATH for a checkpoint folder"),
                (f"method=[...]", f"default: these {len(g['method'])} (conf/config.yaml; every name: conf/method/*.yaml): {', '.join(g['method'])}"),
                (f"plant={g['plant']}", f"one of {', '.join(conf_choices('plant'))} (fresh: plant every organism here)"),
                (f"stages={show(c['stages'])}", "any subset runs alone (or: diffbench plant|collect|score)"),
                (f"run_dir={c['run_dir']}", "the run folder (a rerun with the same run_dir resumes)"),
                (f"device={c['device']} dtype={c['dtype']} threads={c['threads']} cache_dir={show(c['cache_dir'])}", ""),
                ("-m ... hydra/launcher=joblib", "a Hydra multirun (one job per method/pair block; docs/usage.md#scale-out)")]
        head = ("usage: diffbench [run] [key=value ...]\n\n"
                "Plants known behaviors into a base model, runs the diffing methods on the model pairs and scores their\n"
                "findings against the planted ground truth: plant -> collect -> diff -> score -> report, every stage cached.")
        example = "diffbench run suite=quick method=[mean_diff,random_directions,dfc]"
        more = "conf/config.yaml"
    import textwrap

    lines = [head, "", "main options (key=default):"]
    for o, d in opts:  # the option, its description wrapped beside it (or below a long option)
        body = textwrap.wrap(d, 88) or [""]
        lines += ([f"  {o:<24} {body[0]}".rstrip()] if len(o) <= 24 else [f"  {o}", f"  {'':<24} {body[0]}".rstrip()] if d else [f"  {o}"])
        lines += [f"  {'':<24} {b}" for b in body[1:]]
    lines += ["", f"example:\n  {example}", "",
              f"every option with its value: diffbench {command} {FULL_CONFIG}   (Hydra's --cfg job; the files: {more}, docs/usage.md)",
              "other commands: diffbench --help"]
    return "\n".join(lines)


def _unknown_command(word: str) -> None:
    _fail(unknown_name("command", word, list(COMMANDS)).replace(". Known: ", ". Commands: ", 1) +
          " (diffbench --help says what each does; options are key=value, e.g. diffbench run suite=full)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)  # third-party warnings: a run's cli.log, not the terminal (conf/hydra/job_logging/)
    for noisy in ("transformers", "transformers.modeling_utils", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if argv and argv[0] in (*HELP_FLAGS, "help"):
        print(__doc__)
        return
    command = argv[0] if argv and argv[0] in COMMANDS else "run"
    if argv and not (argv[0] in COMMANDS or argv[0].startswith(("-", "+", "~")) or "=" in argv[0]):
        _unknown_command(argv[0])
    if command in ("run", "diff", *STAGE_WORDS) and any(a in HELP_FLAGS for a in argv):
        print(usage("diff" if command == "diff" else "run"))
        return
    argv = [x for a in argv for x in (("--cfg", "job") if a == FULL_CONFIG else (a,))]
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
        given = lambda key: any(a.lstrip("+").startswith(key + "=") for a in argv[1:])
        if given("models"):  # N-way (harness/difftool/nway.py): its own default folder, the first member's name in it
            if given("model_a") or given("model_b"):
                _fail("diffbench diff takes either models=[A,B,...] (N-way) or model_a= and model_b= (two models), not both")
            return _run_hydra(argv[1:] + ([] if given("out") else [NWAY_OUT]), "diff")
        missing = [k for k in ("model_a", "model_b") if not given(k)]
        if missing and "--cfg" not in argv:
            _fail(f"diffbench diff needs {' and '.join(m + '=...' for m in missing)} (a model name, a checkpoint folder or "
                  "an adapter folder), or models=[A,B,...] for an N-way diff; options: diffbench diff --help")
        return _run_hydra(argv[1:], "diff")
    if argv and argv[0] == "run":
        argv = argv[1:]
    elif argv and argv[0] in STAGE_WORDS:
        argv = [f"stages=[{argv[0]}]", *argv[1:]]
    _run_hydra(argv)


if __name__ == "__main__":
    main()
