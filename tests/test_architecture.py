"""The architecture holds: layers import only downward, no import circle, light paths stay light.

The layer order and the packages that must not import TensorFlow are import-linter contracts
in pyproject.toml; ``lint-imports`` checks them over the whole import graph, function-level
imports included.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

from conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_linter_contracts_are_kept():
    done = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Layers import downward only KEPT" in done.stdout
    assert "0 broken" in done.stdout


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle():
    graph = grimp.build_graph("kerasdiag")
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    # guards the test above: a planted circle must be found
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _circles(graph) == [["a.x", "a.y"]]


def test_light_paths_do_not_start_tensorflow():
    # A bad config is refused and a report rebuilt without TensorFlow's seconds of start-up.
    code = (
        "import sys, kerasdiag, kerasdiag.config, kerasdiag.cli, kerasdiag.diagnosis, "
        "kerasdiag.report; kerasdiag.config.load_config(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# A requirement code (one capital letter and a number) refers to a document this
# repository does not contain: names and docstrings say what things are instead.
REQUIREMENT_CODE = re.compile(r"\b[GSMOHEPRB](?:[1-9]|1[0-2])\b|\bMISSION\b")


def test_no_requirement_codes_in_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = []
    for name in tracked:
        path = REPO / name
        if path.suffix in {".png", ".npz", ".keras"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if REQUIREMENT_CODE.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:80]}")
    assert hits == []
    # guards the pattern: it finds a code, and not ruff's rule names or HTML headings
    planted = "monitors ({}{}, {}{})".format("M", 3, "P", 8)
    assert REQUIREMENT_CODE.search(planted)
    assert not REQUIREMENT_CODE.search('ignore = ["E501"]  <h1>')
