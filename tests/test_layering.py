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
    """Methods share code through methods/_shared/ (private helpers), never through each other."""
    methods = ROOT / "methods"
    bad = []
    for path in sorted(methods.rglob("*.py")):
        if "_shared" in path.parts or path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                top = node.module.split(".")[0]
                if top not in ("_shared",) and top != "core" and (methods / f"{top}.py").exists() or (
                        node.level and node.module and (path.parent / f"{node.module.split('.')[0]}.py").exists()
                        and path.parent != methods / "_shared"):
                    bad.append(f"{path.relative_to(ROOT)} imports .{node.module}")
    assert not bad, "\n".join(bad)
