"""CSV tables streamed from disk: a table larger than the memory the process is allowed
beyond what TensorFlow itself takes trains to completion, and malformed rows are named by
line and skipped and counted, or refused."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from hydra import initialize_config_dir

from kerasdiag.config import CONF_DIR, load_config
from kerasdiag.core.errors import ConfigError, DataError
from kerasdiag.core.rundir import RunLayout
from kerasdiag.data import load_dataset

from conftest import REPO

# What the run is allowed beyond the address space a run on a tiny table reached
# (TensorFlow's own: ~3 GB of virtual memory on this machine, mostly thread arenas), and the
# size of the table trained on under that limit: larger than the allowance.
ALLOWANCE = 40 * 2**20
TABLE_BYTES = 64 * 2**20
FEATURES = 40  # ~290 bytes a row: a run keeps a few bytes per row (its class, its split)
RUN = ["recipe=tabular_mlp", "data.target=label", "loss=binary", "trainer.epochs=1",
       "sanity=off", "monitors=off", "data.batch_size=4096", "trainer.verbose=0",
       "trainer.tensorboard=false"]  # fmt: skip
# Print the process's peak address space when it exits (the run ends with sys.exit).
PEAK = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmPeak'): print('VMPEAK', int(line.split()[1]) * 1024)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['scripts/train.py', *sys.argv[1:]]\n"
    "runpy.run_path('scripts/train.py', run_name='__main__')\n"
)


def _run(args, limit=None):
    # one malloc arena per thread would make the address space vary with thread timing
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO),
           "MALLOC_ARENA_MAX": "2"}  # fmt: skip

    def cap():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-c", PEAK, *RUN, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, preexec_fn=cap)  # fmt: skip


def _peak(proc) -> int:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split("VMPEAK")[-1].split()[0])


def write_table(path, rows: int, seed: int = 0) -> None:
    """A synthetic table (a label linear in the features): what matters is its size."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).round(3)
    y = (x @ np.linspace(1, -1, FEATURES) > 0).astype(int)
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(FEATURES)] + ["label"]) + "\n")
        np.savetxt(f, np.column_stack([x, y]), fmt=["%.3f"] * FEATURES + ["%d"], delimiter=",")


def test_a_table_larger_than_the_memory_left_trains_to_completion(tmp_path):
    small = tmp_path / "small.csv"
    write_table(small, 8000)
    baseline = _peak(_run([f"data.path={small}", f"hydra.run.dir={tmp_path / 'small'}"]))
    big = tmp_path / "big.csv"
    block = tmp_path / "block.csv"
    write_table(block, 10000, seed=1)
    rows = block.read_text().split("\n", 1)[1]
    with open(big, "w") as f:  # the block repeated up to the size wanted
        f.write(block.read_text().split("\n", 1)[0] + "\n")
        while f.tell() < TABLE_BYTES:
            f.write(rows)
    assert big.stat().st_size > ALLOWANCE
    run = tmp_path / "big"
    proc = _run([f"data.path={big}", f"hydra.run.dir={run}"], limit=baseline + ALLOWANCE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / RunLayout.DATA).read_text())
    assert summary["streamed"] and summary["train"] + summary["val"] + summary["test"] > 2e5
    assert json.loads((run / RunLayout.TEST_METRICS).read_text())["accuracy"] > 0.9


@pytest.fixture
def hydra_once():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield


def test_malformed_rows_are_named_by_line_and_skipped_or_refused(tmp_path, hydra_once):
    from sklearn.datasets import load_wine

    wine = load_wine()
    lines = [",".join([*(n.replace(" ", "_") for n in wine.feature_names), "label"])]
    lines += [",".join([*(repr(float(v)) for v in r), str(t)])
              for r, t in zip(wine.data, wine.target, strict=True)]  # fmt: skip
    lines[5] = lines[5].replace(lines[5].split(",")[0], "high", 1)  # line 6: not a number
    lines[9] = ",".join(lines[9].split(",")[:-2])  # line 10: a cell short
    lines.insert(20, "")  # line 21: blank, no row and no error
    path = tmp_path / "wine.csv"
    path.write_text("\n".join(lines) + "\n")
    base = ["data=csv", f"data.path={path}", "data.target=label"]
    with pytest.raises(DataError, match=r"wine.csv line 6: column 'alcohol' holds 'high'"):
        load_dataset(load_config(base).data)
    data = load_dataset(load_config([*base, "data.on_bad_file=skip"]).data)
    assert [s["file"] for s in data.skipped] == [f"{path} line 6", f"{path} line 10"]
    assert "12 cells, the header has 14" in data.skipped[1]["reason"]
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == len(wine.target) - 2
    # every row read back by the stream is the table's row, in its split, with its label
    rows = np.concatenate([b[0] for b in data.split_batches("test", 16).as_numpy_iterator()])
    raw = rows * data.std + data.mean
    for row in raw[:5]:
        assert np.abs(wine.data - row).max(axis=1).min() < 1e-3
    assert data.summary()["skipped_files"] == 2
    with pytest.raises(ConfigError, match=r"data.augment.noise=0.1: is not applied to data=csv"):
        load_dataset(load_config([*base, "data.augment.noise=0.1"]).data)


def test_the_csv_files_scikit_learn_ships_stream_or_are_refused_by_their_first_row():
    # Files nobody here wrote. iris.csv's header is scikit-learn's own ("150,4,setosa,
    # versicolor,virginica": counts, then class names), yet its rows are a plain table whose
    # last column is the class. breast_cancer.csv's header has 4 cells and its rows 31: not
    # one row can be an example, and the error says why rather than "no rows".
    import sklearn

    folder = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data")
    iris = load_dataset(load_config(["data=csv", f"data.path={folder}/iris.csv",
                                     "data.target=virginica"]).data)  # fmt: skip
    assert len(iris.y_train) + len(iris.y_val) + len(iris.y_test) == 150
    assert iris.num_classes == 3 and iris.input_shape == (4,)
    batch = next(iris.training_batches(16, epochs=1).as_numpy_iterator())
    assert batch[0].shape == (16, 4) and np.isfinite(batch[0]).all()
    cancer = load_config(["data=csv", f"data.path={folder}/breast_cancer.csv",
                          "data.target=benign"]).data  # fmt: skip
    with pytest.raises(
        DataError, match=r"none of its 569 rows .*line 2: 31 cells, the header has 4"
    ):
        load_dataset(cancer)
