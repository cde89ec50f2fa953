"""benchmarks/gpu_check.py on the CPU: the script a GPU session runs works before one is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_small_run_prints_one_row_per_variant(tmp_path, cifar_dir):
    rows_file = tmp_path / "rows.json"
    done = run("--small", "--rows", "float32,mixed float16 + XLA", "--json", str(rows_file),
               "--data-path", str(cifar_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(rows_file.read_text())
    assert [r["row"] for r in rows] == ["float32", "mixed float16 + XLA"]
    for row in rows:
        assert row["device"].startswith("CPU")
        assert row["seconds_per_epoch"] > 0
        assert 0.0 <= row["test_accuracy"] <= 1.0
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(rows)  # header, rule, one line per row
    assert "| float32 | CPU" in table[2] and "| 1.00 |" in table[2]


def test_unknown_row_is_refused_naming_it():
    done = run("--rows", "float32,float8")
    assert done.returncode == 2
    assert "float8" in done.stderr.strip().splitlines()[-1]
