"""The package's layering: core/ (the shared contract) imports none of harness/, methods/, tasks/; tasks/ and
methods/ import only core/ (and themselves); harness/ may import all three. No package-level import cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "harness", "methods", "tasks", "conf")
ALLOWED = {"core": {"core"}, "tasks": {"core", "tasks"}, "methods": {"core", "methods"},
           "conf": {"core", "conf"}, "harness": {"core", "tasks", "methods", "harness"}}


def imported_packages(path: Path) -> set[str]:
    """diffbench packages a module imports (relative or absolute, at any depth in the file)."""
    rel = path.relative_to(ROOT).parts
    here = ["diffbench", *rel[:-1]]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
            out |= {m.split(".")[1] for m in mods if m.startswith("diffbench.") and len(m.split(".")) > 1}
            continue
        else:
            continue
        parts = mod.split(".")
        if parts[0] == "diffbench" and len(parts) > 1:
            out.add(parts[1])
    return out


def test_layers():
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for dep in imported_packages(path) - ALLOWED[pkg]:
                bad.append(f"{path.relative_to(ROOT)} imports diffbench.{dep}")
    assert not bad, "\n".join(bad)


def test_no_method_imports_another_method():
    """Methods share code through private helper packages (a name starting with `_`, as load_all_methods skips them:
    methods/_shared/, methods/crosscoder/_lib/), never through each other."""
    methods = ROOT / "methods"
    bad = []
    for path in sorted(methods.rglob("*.py")):
        if any(p.startswith("_") for p in path.relative_to(methods).parts[:-1]) or path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                parts = node.module.split(".")
                if any(p.startswith("_") for p in parts):
                    continue  # a private helper package
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.joinpath(*parts).with_suffix(".py")  # the module the relative import names
                if target.is_file() and target.resolve().is_relative_to(methods.resolve()):
                    bad.append(f"{path.relative_to(ROOT)} imports {'.' * node.level}{node.module}")
    assert not bad, "\n".join(bad)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(["diffbench", *(rel[:-1] if rel[-1] == "__init__" else rel)])


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The diffbench modules `path` imports when it is itself imported (statements outside functions and classes)."""
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out = set()
    tree = ast.parse(path.read_text())
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # never runs
        if isinstance(node, (ast.If, ast.Try)):  # imports under other `if`s and `try` run at import time
            stack += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                      *(s for h in getattr(node, "handlers", []) for s in h.body)]
            continue
        if isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else [])) if node.level else node.module
            for a in node.names:  # `from pkg import module` imports the module; `from module import name` the module
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in modules}


def test_no_import_cycle_at_import_time():
    """No module imports, while it is being imported, a module that (transitively) imports it back: such cycles make
    the import order matter and ran code a run does not need (the test models were once built into every run)."""
    paths = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _top_level_imports(p, modules) for p in paths}
    cycles, state = [], {}

    def visit(m, trail):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if d == m:
                continue
            if state.get(d) == "open" and not d.startswith(m + ".") and not m.startswith(d + "."):
                cycles.append(" -> ".join([*trail[trail.index(d):], d]) if d in trail else f"{m} -> {d}")
            elif d not in state:
                visit(d, [*trail, d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_test_models_are_not_registered_by_a_run():
    """The tiny random models register themselves only when one is asked for (harness/tiny_models.py), and the names
    listed before that are exactly those the module registers."""
    import subprocess
    import sys

    code = ("import sys; from diffbench.harness.models import MODEL_SOURCES as M; listed = set(M._lazy); "
            "assert 'diffbench.harness.tiny_models' not in sys.modules; M.get('tiny-llama'); "
            "assert set(M._items) >= listed, listed - set(M._items); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
