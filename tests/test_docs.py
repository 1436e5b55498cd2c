"""The README and docs/: a short README, relative links that resolve, no narration of the work's history (session
ordinals) and no machine paths; CI still runs the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
            "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
SESSION = re.compile(r"\b(" + "|".join(ORDINALS) + r"|\d+(st|nd|rd|th))\s+session\b", re.IGNORECASE)
MACHINE_PATH = re.compile(r"(?<![\w.])/(root|tmp|home)/")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold commands, not links
    return [m.group(1) for m in LINK.finditer(text)]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines (at most 250: move detail to docs/)"


def test_docs_exist():
    names = {p.name for p in DOCS}
    for page in ("protocol.md", "results.md", "speed.md", "failures.md", "environment.md", "extending.md",
                 "organisms.md", "known-gaps.md", "usage.md"):
        assert page in names


def test_relative_links_resolve():
    bad = []
    for doc in DOCS:
        for target in _links(doc.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # http(s):, mailto:, in-page
                continue
            path = target.split("#", 1)[0]
            if not (doc.parent / path).exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not bad, "broken relative links:\n" + "\n".join(bad)


def test_no_session_ordinals_or_machine_paths():
    bad = []
    for doc in DOCS:
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            if SESSION.search(line) or MACHINE_PATH.search(line):
                bad.append(f"{doc.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not bad, "history narration or machine paths:\n" + "\n".join(bad)


def test_patterns_catch_what_they_should():
    assert SESSION.search("as measured in the Fifteenth session") and SESSION.search("the 16th session")
    assert not SESSION.search("one session of a run")
    assert MACHINE_PATH.search("run_dir=/root/runs/x") and MACHINE_PATH.search("see /tmp/cache")
    assert not MACHINE_PATH.search("`runs/quick`, `~/.cache/diffbench`")
    assert _links("[a](docs/x.md) ![b](y.png) ```\n[c](z)\n```") == ["docs/x.md", "y.png"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\b", ci, re.MULTILINE), ".ci/run must call the README's test command"


def test_reports_show_no_machine_paths(tmp_path):
    """The command a report shows has every absolute path cut to its last part, and the committed reports follow."""
    from diffbench.harness.report.leaderboard import header, public_command

    assert public_command("diffbench run_dir=/work/runs/full cache_dir=/x/c report /a/b/run 'plugins=[/h/m.py]'") == \
        "diffbench run_dir=…/full cache_dir=…/c report …/run 'plugins=[…/m.py]'"
    (tmp_path / "command.txt").write_text("diffbench run_dir=/srv/me/runs/q cache_dir=/srv/me/cache\n")
    scores = {"metrics": {}, "model": "m", "suite": "s", "method_seeds": [0], "pairs": []}
    assert "/srv/" not in "\n".join(header(tmp_path, scores))
    root = Path(__file__).resolve().parent.parent / "results"
    machine = re.compile(r"(run_dir|cache_dir)=/|report /|/(work|root|home|tmp)/")
    for f in [*root.glob("**/leaderboard.md"), *root.glob("**/html/index.html")]:
        command = [l for l in f.read_text().splitlines() if "command" in l][:1]
        assert not any(machine.search(l) for l in command), f
