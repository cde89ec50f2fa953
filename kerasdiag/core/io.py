"""Safe file I/O: atomic writes (a crash leaves the old file or the new one, never half of
one) and loading models without running code from the file.

Every file a run writes goes through these functions; writers that need a file name of their
own (``model.save``, ``savefig(path)``) write into :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Temporary files start with this prefix (and a dot): readers that glob a folder skip them,
# and a writer can sweep up the ones a killed process left behind.
TMP_PREFIX = ".tmp-"


def _umask_mode() -> int:
    # mkstemp creates 0600 files; run files should get the usual 0666 & ~umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, staged: bool | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    ``staged`` (the default for ``.keras`` and ``.h5`` files) yields a path in memory-backed
    scratch space instead and copies the result over: h5py crashes the process when the disk
    fills up under it, a copy fails with an ordinary ``OSError`` naming ``path``.

    For writers that want a file name rather than bytes. The temporary name keeps the final
    name's suffixes (``.keras``, ``.weights.h5``, ``.png``), which some writers check.
    If the block raises, the temporary file is removed and ``path`` is untouched.

    Example:
        >>> with atomic_path("run/checkpoints/best.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    if staged is None:
        staged = path.suffix in (".keras", ".h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{os.getpid()}-",
                                suffix=f"-{path.name}")  # fmt: skip
    os.close(fd)
    tmp = Path(name)
    scratch = _scratch_file(path.name) if staged else None
    try:
        yield scratch or tmp
        if scratch is not None:
            shutil.copyfile(scratch, tmp)  # a full disk fails here, as a plain OSError
        _fsync(tmp)  # the data is on disk before the new name points at it
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        ours = (None, str(tmp), str(scratch))  # name the file being written, not a temporary
        if exc.errno is None or exc.filename not in ours:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    _fsync(path.parent)


# Model and weights files are written by h5py, which crashes the process (SIGSEGV) when the
# disk fills up under it. They are written to memory-backed scratch first and copied over.
SCRATCH_DIR = Path("/dev/shm")


def _scratch_file(name: str) -> Path | None:
    if not (SCRATCH_DIR.is_dir() and os.access(SCRATCH_DIR, os.W_OK)):
        return None
    fd, scratch = tempfile.mkstemp(dir=SCRATCH_DIR, prefix=f"kerasdiag-{os.getpid()}-",
                                   suffix=f"-{name}")  # fmt: skip
    os.close(fd)
    return Path(scratch)


def _fsync(path: Path) -> None:
    # Directories too (that makes the rename itself durable); not every platform allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex (how backups prove they are what was written)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete temporary files an interrupted writer left in ``folder``; return them.

    ``recursive`` looks in its subfolders too (what a run's start does for its directory).
    A temporary whose writer (the process id in its name) is another process still alive
    is kept: it may be that process's write in progress. This process's own are stale (a
    process id reused after a restart, in a container).
    """
    removed = []
    pattern = f"**/{TMP_PREFIX}*" if recursive else f"{TMP_PREFIX}*"
    for tmp in Path(folder).glob(pattern):
        if tmp.is_file() and not _writer_alive(tmp.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _writer_alive(name: str) -> bool:
    # atomic_path names its temporaries .tmp-PID-...
    pid = name[len(TMP_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit() or int(pid) in (0, os.getpid()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def write_csv_atomic(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def json_safe(value: Any) -> Any:
    """``value`` with plain containers and scalars only, NaN/Inf as readable strings.

    JSON has no NaN or Inf: they become ``"nan"``, ``"inf"``, ``"-inf"``; numpy scalars
    become Python numbers, mapping keys strings. The one sanitizer of the JSON records a
    run writes (findings, doctor.json, sanity.json); it copies every container.

    Example:
        >>> json_safe({"loss": float("nan"), 1: [2.5]})
        {'loss': 'nan', '1': [2.5]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the values our reports hold.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
