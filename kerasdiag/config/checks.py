"""The small checks the schema's validators are written with; each raises a one-line ConfigError.

No TensorFlow here (a model builder is checked by reading its module, not importing it).
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib.util
import math
import stat
import sys
from dataclasses import field
from pathlib import Path
from typing import Any

from kerasdiag.core.errors import ConfigError

MAX_INT = 2**31 - 1  # sizes and counts beyond this overflow TensorFlow's int32 shapes
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding (keras.utils.set_random_seed) takes uint32
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max


def require(ok: bool, key: str, value: Any, requirement: str) -> None:
    """Raise ``ConfigError(key, value, requirement)`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, requirement)


def finite(value: Any) -> bool:
    """A finite int or float (not a bool); math.isfinite overflows on huge Python ints."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def path_problem(path: Path, kind: str) -> str | None:
    """What stands in the way of reading ``path`` as a ``kind`` ("file" or "directory"), or
    None when it is one.

    Says what the path really is (a device, a directory, a symlink loop, ...): "no such file"
    for ``/dev/zero`` sends a person looking for a typo that is not there.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (a link that leads back to itself): point it at a real path"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return f"is a broken symlink (its target does not exist): no such {kind}"
        if exc.errno == errno.ENOTDIR:
            return f"no such {kind} (a part of the path is a file, not a directory)"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"cannot be read: permission denied (on {kind} or a folder above it)"
        if exc.errno == errno.ENOENT:
            return f"no such {kind}"
        return f"cannot be read: {exc.strerror or exc}"
    if kind == "file" and stat.S_ISREG(mode) or kind == "directory" and stat.S_ISDIR(mode):
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    elif stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISREG(mode):
        what = "a file"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "not a regular file"
    return f"is {what}, not a {kind}"


def check_path(key: str, value: Any, kind: str) -> Path:
    """``value`` (the config's ``key``) names an existing ``kind``: the path, expanded;
    otherwise a ConfigError saying what it is instead (:func:`path_problem`)."""
    path = Path(str(value)).expanduser()
    problem = path_problem(path, kind)
    require(problem is None, key, value, problem or "")
    return path


def get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def positive(cfg: Any, key: str, *, strict: bool = True, optional: bool = False) -> None:
    """``key`` is a finite number > 0 (>= 0 unless ``strict``); None passes if ``optional``."""
    value = get(cfg, key)
    if optional and value is None:
        return
    ok = finite(value) and (value > 0 if strict else value >= 0)
    require(ok, key, value, "must be > 0" if strict else "must be >= 0")
    if isinstance(value, int):
        require(value <= MAX_INT, key, value, f"must be at most {MAX_INT}")


def fraction(
    cfg: Any, key: str, *, open_low: bool = True, open_high: bool = True, optional: bool = False
) -> None:
    """``key`` lies in (0, 1), [0, 1), (0, 1] or [0, 1]; None passes if ``optional``."""
    value = get(cfg, key)
    if optional and value is None:
        return
    require(finite(value), key, value, "must be a finite number")
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    require(low_ok and high_ok, key, value, f"must be in {interval}")


def ranged(default: Any, rule: str) -> Any:
    """A dataclass field with its range: ``">0"``, ``">=0"`` or an interval of [0, 1] such as
    ``"(0,1)"`` or ``"[0,1)"``. :func:`check_range` enforces it; None (where the type allows
    it) always passes.

    Example:
        >>> from dataclasses import dataclass, fields
        >>> @dataclass
        ... class Section:
        ...     rate: float = ranged(0.1, "(0,1)")
        >>> fields(Section)[0].metadata["range"]
        '(0,1)'
    """
    return field(default=default, metadata={"range": rule})


def check_range(cfg: Any, key: str, rule: str) -> None:
    """Raise ConfigError unless ``key`` satisfies ``rule`` (see :func:`ranged`)."""
    if rule in (">0", ">=0"):
        positive(cfg, key, strict=rule == ">0", optional=True)
    else:
        fraction(cfg, key, open_low=rule[0] == "(", open_high=rule[-1] == ")", optional=True)


def one_of(cfg: Any, key: str, allowed: Any) -> None:
    """``key`` is one of the names of ``allowed`` (a registry: tuple, set or dict)."""
    value = get(cfg, key)
    require(value in allowed, key, value, f"must be one of {', '.join(sorted(allowed))}")


def check_builder(path: str, key: str = "model.builder") -> None:
    """The module ``model.builder`` (or ``key``) names exists, its imports are installed and it defines
    the function: found without importing it (its ``import keras`` would start TensorFlow).

    What this cannot see (an import inside a function, a failing submodule) is reported with
    its real exception when the pipeline imports the builder.
    """
    module_name, _, func_name = path.rpartition(".")
    # The builder is imported and called: never a function of the standard library.
    require(path.split(".")[0] not in sys.stdlib_module_names, key, path,
            "must name a model builder, not a standard-library function")  # fmt: skip
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:  # a parent package fails to import
        raise ConfigError(key, path, _import_failure(module_name, exc)) from None
    if spec is None:
        raise ConfigError(key, path, f"no module named {module_name!r}")
    if not spec.origin or not spec.origin.endswith(".py") or not Path(spec.origin).is_file():
        return  # compiled or namespace modules: the import itself will tell
    missing, defined = _module_imports_and_names(spec.origin)
    for name in missing:
        exc = ModuleNotFoundError(f"No module named {name!r}")
        raise ConfigError(key, path, _import_failure(module_name, exc))
    if defined is not None and func_name not in defined:
        raise ConfigError(key, path, f"module {module_name!r} defines no {func_name!r}")


def _import_failure(module_name: str, exc: BaseException) -> str:
    return f"module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}"


@functools.cache
def _module_imports_and_names(filename: str) -> tuple[list[str], set[str] | None]:
    """(top-level absolute imports that are not installed, names the module defines)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"), filename)
    except (OSError, SyntaxError, ValueError):
        return [], None  # the import reports it
    missing, names, star = [], set(), False
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots = [node.module.split(".")[0]] if node.module and node.level == 0 else []
            names.update(a.asname or a.name for a in node.names)
            star = star or any(a.name == "*" for a in node.names)
        else:
            roots = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            elif not isinstance(node, ast.Expr):  # if/try blocks may define names
                star = True
        for root in roots:
            if root != "__future__" and importlib.util.find_spec(root) is None:
                missing.append(root)
    return missing, None if star else names
