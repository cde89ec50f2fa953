"""The documentation is run: every Python example executes and every command parses.

- Every fenced ``python`` block of README.md and docs/*.md runs, in document order, in one
  scratch folder (the reader's working directory). A block may opt out only with a visible
  marker on the line before it: ``<!-- not run: REASON -->``.
- A fenced block whose first line is a comment naming a file (``# mynets.py``,
  ``# my_conf/model/my_resnet.yaml``) is also written into that folder as that file, so the
  commands that use it (``--config-dir my_conf model=my_resnet``) can be checked.
- Every ``python scripts/train.py ...`` command in a ``bash``/``console`` block or an inline
  code span is validated with ``kerasdiag.config.load_config`` (composition and the schema's
  checks; nothing trains). ``-m`` sweeps are expanded and every job is checked;
  ``--config-dir DIR`` becomes Hydra's search path; ``--help`` is run.
- No command hides where it is not checked (an indented block, a ``text`` block).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CIFAR_SAMPLE, REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPT = "python scripts/train.py"
SHELL = {"bash", "console", "sh", "shell"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FILE_HEADER = re.compile(r"^#\s+([\w][\w./-]*\.(?:py|ya?ml))\b")
# the CIFAR-10 sample as the docs name it (from the repository root), and where tests find it
DOCS_CIFAR = "../shared/data/cifar10-sample/cifar-10-batches-py"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason of a <!-- not run: ... --> marker

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def filename(self) -> str | None:
        match = FILE_HEADER.match(self.code)
        return match.group(1) if match else None


def fenced_blocks(page: Path) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced blocks of a Markdown page, and its other lines (number, text)."""
    blocks, prose = [], []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            lang = stripped[3:].strip().split(" ")[0].lower()
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
                i += 1
            assert i < len(lines), f"{page.name}:{start + 1}: unclosed code fence"
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.search(before)
            blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n",
                                marker.group(1) if marker else None))  # fmt: skip
        else:
            prose.append((i + 1, lines[i]))
        i += 1
    return blocks, prose


BLOCKS = [b for page in PAGES for b in fenced_blocks(page)[0]]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def _command_from(text: str) -> list[str] | None:
    """The arguments after ``python scripts/train.py`` on one shell line, or None."""
    at = text.find(SCRIPT)
    if at < 0:
        return None
    tokens = shlex.split(text[at + len(SCRIPT) :], comments=True)
    for i, token in enumerate(tokens):
        if token in {"&&", "||", ";", "|", "&"}:
            return tokens[:i]
    return tokens


def commands() -> list[tuple[str, list[str]]]:
    """Every ``python scripts/train.py`` command a reader may copy, with where it is."""
    found = []
    for page in PAGES:
        blocks, prose = fenced_blocks(page)
        for block in blocks:
            if block.lang not in SHELL:
                continue
            text = block.code.replace("\\\n", " ")  # continuation lines
            for k, line in enumerate(text.splitlines()):
                args = _command_from(line.strip().removeprefix("$ "))
                if args is not None:
                    found.append((f"{block.where}+{k + 1}", args))
        for number, line in prose:
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(SCRIPT):
                    args = _command_from(span)
                    found.append((f"{page.relative_to(REPO)}:{number}", args))
    return found


COMMANDS = commands()


# --- the scratch folder the examples run in ---------------------------------------------------


class Workspace:
    """One folder where the examples run in document order, as a reader would run them."""

    def __init__(self, path: Path):
        self.path = path
        self.errors: dict[Block, str | None] = {}
        for block in BLOCKS:
            if block.filename:
                target = path / block.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code)

    def run(self, block: Block) -> str | None:
        """Run one Python block (once); the formatted traceback if it raised."""
        if block not in self.errors:
            cwd = os.getcwd()
            os.chdir(self.path)
            try:
                code = compile(block.code, block.where, "exec")
                exec(code, {"__name__": "__main__", "__file__": str(self.path / "example.py")})
                self.errors[block] = None
            except BaseException:  # noqa: BLE001 - report whatever the example raised
                self.errors[block] = traceback.format_exc()
            finally:
                os.chdir(cwd)
        return self.errors[block]

    def run_all(self) -> None:
        for block in PYTHON:
            if block.skip is None:
                self.run(block)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs_workspace")
    sys.path.insert(0, str(path))  # the examples' own modules (mynets.py), as on PYTHONPATH
    before = set(sys.modules)
    try:
        yield Workspace(path)
    finally:
        sys.path.remove(str(path))
        # Forget the examples' modules: a later test that writes its own mynets.py must not
        # get this one from the import cache.
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if str(getattr(module, "__file__", "") or "").startswith(str(path)):
                del sys.modules[name]


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, id=b.where, marks=[pytest.mark.skip(reason=b.skip)] if b.skip else [])
        for b in PYTHON
    ],
)
def test_python_example_runs(block, workspace):
    start = time.perf_counter()
    error = workspace.run(block)
    assert error is None, f"the example at {block.where} failed:\n{error}"
    assert time.perf_counter() - start < 60, f"{block.where}: keep examples small"


def _jobs(args: list[str], workspace: Workspace) -> list[list[str]]:
    """The override lists ``scripts/train.py ARGS`` would run (one per job of a sweep)."""
    overrides, multirun, rest = [], False, list(args)
    while rest:
        arg = rest.pop(0)
        if arg in {"-m", "--multirun"}:
            multirun = True
        elif arg in {"--config-dir", "-cd"} or arg.startswith("--config-dir="):
            folder = arg.split("=", 1)[1] if "=" in arg else rest.pop(0)
            path = (workspace.path / folder).resolve()
            assert path.is_dir(), f"--config-dir {folder}: no such folder in the docs' files"
            overrides.append(f"hydra.searchpath=[file://{path}]")
        elif arg.startswith("-"):
            raise AssertionError(f"a flag these tests do not know: {arg}")
        else:
            overrides.append(arg.replace(DOCS_CIFAR, str(CIFAR_SAMPLE)))
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    assert multirun or not sweeps, f"a sweep ({sweeps[0].input_line}) without -m"
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("where,args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_is_a_valid_config(where, args, workspace, monkeypatch):
    from kerasdiag.config import load_config

    if args == ["--help"]:
        proc = subprocess.run([sys.executable, "scripts/train.py", "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        for recipe in (REPO / "conf" / "recipe").glob("*.yaml"):
            assert recipe.stem in proc.stdout
        return
    workspace.run_all()  # the files the examples write (my_data.npz, ...) are the reader's
    monkeypatch.chdir(workspace.path)
    for job in _jobs(args, workspace):
        load_config(job)  # raises a one-line ConfigError naming the bad key


def test_no_command_hides_where_it_is_not_checked():
    shell_line = re.compile(r"^\s*(\$ )?([A-Z_]+=\S*\s+)*" + re.escape(SCRIPT))
    hidden = []
    for page in PAGES:
        blocks, prose = fenced_blocks(page)
        for block in blocks:
            if block.lang not in SHELL | {"python"}:
                hidden += [f"{block.where} ({block.lang or 'no language'})"
                           for line in block.code.splitlines() if shell_line.match(line)]  # fmt: skip
        hidden += [f"{page.name}:{n} (indented)" for n, line in prose
                   if line.startswith("    ") and shell_line.match(line)]  # fmt: skip
    assert not hidden, f"commands outside a bash block: {hidden}"


def test_the_docs_are_collected():
    # guards the parsers: a reshuffle of the docs must not leave these tests with nothing to do
    names = {p.name for p in PAGES}
    for page in ("configuration.md", "checks.md", "monitors.md", "search.md", "ensembles.md",
                 "multi-device.md", "reliability.md", "security.md", "benchmarks.md",
                 "architecture.md", "data.md"):  # fmt: skip
        assert page in names
    assert len(PYTHON) >= 12 and len(COMMANDS) >= 30
    assert sum(b.skip is not None for b in PYTHON) <= 2, "opt-outs are for the truly impossible"
    assert any(b.page.name == "README.md" for b in PYTHON)
    readme = [b.code for b in BLOCKS if b.page.name == "README.md" and b.lang in SHELL]
    # the two set-up commands, each usable on its own on a fresh machine
    assert any('pip install -e ".[dev]" && python scripts/train.py\n' in c for c in readme)
    assert any('pip install -e ".[dev]" && pytest\n' in c for c in readme)
    assert ("README.md", []) in [(Path(w.split(":")[0]).name, a) for w, a in COMMANDS]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    _, prose = fenced_blocks(page)
    headings = [line.lstrip("#").strip() for _, line in prose if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_docs_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target:
                continue
            path = (page.parent / target) if target else page
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
            elif anchor and (path.suffix != ".md" or anchor not in _anchors(path)):
                broken.append(f"{page.relative_to(REPO)} -> {target}#{anchor}")
    assert not broken, broken
    assert "the-run-directory" in _anchors(REPO / "README.md")  # the parser finds headings


def test_the_screenshot_is_a_small_png():
    image = REPO / "docs" / "images" / "report.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.stat().st_size < 400_000
    assert "docs/images/report.png" in (REPO / "README.md").read_text()
