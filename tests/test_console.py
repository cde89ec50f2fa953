"""A quiet console: TensorFlow's start-up noise is gone, real warnings stay, --verbose restores it.

The subprocesses run without ``TF_CPP_MIN_LOG_LEVEL`` (``.ci/run`` exports one, and so does
conftest.py for this process): the code itself must be quiet, not the test's environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kerasdiag.core.console import filtered_stderr, start_up_line_filter

REPO = Path(__file__).resolve().parents[1]
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\S+\s+\d+ \S+:\d+\] ", re.MULTILINE)
NOISE = {
    "absl preamble": "All log messages before absl::InitializeLog()",
    "oneDNN note": "oneDNN custom operations",
    "CPU banner": "This TensorFlow binary is optimized",
    "cuda probing": "Could not find cuda drivers",
    "cuInit": "cuInit",
    "float64 remapper": "DT_DOUBLE",
}
FROM_LOGITS = "received `from_logits=True`"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less the settings that would quiet TensorFlow for us."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERASDIAG_TF_LOGS")
    }
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, **extra}


def noise_in(output: str) -> list[str]:
    found = [name for name, text in NOISE.items() if text in output]
    return found + [f"native log line: {m.group(0)}" for m in NATIVE_LINE.finditer(output)]


def train(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = ["trainer.epochs=1", "sanity=off", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_cli_run_is_quiet_and_verbose_brings_tensorflow_logs_back(tmp_path):
    # both runs at once: each is mostly TensorFlow's start-up
    quiet, verbose = train(tmp_path / "quiet"), train(tmp_path / "verbose", "--verbose")
    quiet_out, _ = quiet.communicate(timeout=300)
    verbose_out, _ = verbose.communicate(timeout=300)
    assert quiet.returncode == 0, quiet_out[-3000:]
    assert "run directory:" in quiet_out  # the run's own report is all there is
    assert noise_in(quiet_out) == [], quiet_out[-3000:]
    # Hydra never saw --verbose (it would refuse it), and TensorFlow logs as it does by itself
    assert verbose.returncode == 0, verbose_out[-3000:]
    assert NATIVE_LINE.search(verbose_out), verbose_out[-3000:]
    assert sorted(p.name for p in (tmp_path / "verbose").iterdir()) == sorted(
        p.name for p in (tmp_path / "quiet").iterdir()
    )


LIBRARY_USE = """
import sys, warnings
import kerasdiag
assert "tensorflow" not in sys.modules
import keras
from sklearn.datasets import load_digits

digits = load_digits()
x = ((digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-8)).astype("float32")[:64]
y = digits.target[:64].astype("int64")
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(8, activation="tanh"),
     keras.layers.Dense(10, activation="softmax")]
)
# softmax and from_logits=True: Keras' warning is real, and must be said once
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
kerasdiag.check_gradients(model, x, y, samples=1)
with warnings.catch_warnings():  # as Keras, TensorFlow and the doctor do: it resets the registry
    warnings.simplefilter("ignore", kerasdiag.MonitorWarning)
kerasdiag.check_gradients(model, x, y, samples=1)
# kerasdiag's MonitorWarning points at Keras' callback loop: it is never taken for a repeat
for _ in range(2):
    warnings.warn_explicit("a finding", kerasdiag.MonitorWarning, keras.__file__, 1)
    warnings.warn_explicit("a remark", UserWarning, keras.__file__, 1)
print("library use done")
"""


def test_library_use_is_quiet_and_says_each_warning_once():
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_USE],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "library use done" in output
    assert noise_in(output) == [], output[-3000:]
    assert output.count(FROM_LOGITS) == 1, output[-3000:]
    assert output.count("MonitorWarning: a finding") == 2
    assert output.count("UserWarning: a remark") == 1


def _settings_after_import(**env: str) -> list[str]:
    code = (
        "import os, sys, kerasdiag; "
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
        "any(type(f).__name__ == '_QuietTensorFlowImport' for f in sys.meta_path))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_import_sets_the_level_but_a_users_own_value_or_verbose_wins():
    assert _settings_after_import() == ["2", "True"]
    assert _settings_after_import(TF_CPP_MIN_LOG_LEVEL="0") == ["0", "True"]
    assert _settings_after_import(KERASDIAG_TF_LOGS="1") == ["None", "False"]


CAPTURED = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796623634.991030    8343 cpu_feature_guard.cc:227] This TensorFlow binary",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.",
    "W0000 00:00:1796623634.991449    8343 util.cc:163] Not handling type DT_DOUBLE",
    "E0000 00:00:1796623638.875203    8343 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    "E0000 00:00:1796623638.875203    8343 op_kernel.cc:1] a real error",
    "a continuation of the error",
    "I0000 00:00:1796623637.600007    8343 cudart_stub.cc:31] Could not find cuda drivers.",
    "/site-packages/google/protobuf/runtime_version.py:98: UserWarning: Protobuf gencode ...",
    "  warnings.warn(",
]


@pytest.mark.parametrize(
    ("level", "driver", "kept"),
    [
        (2, False, [5, 6, 8, 9]),  # errors stay; without a driver cuInit's failure is information
        (2, True, [4, 5, 6, 8, 9]),  # with a driver it is a real fault
        (1, False, [3, 5, 6, 8, 9]),  # warnings wanted: the float64 one too
        (0, False, list(range(10))),  # the user asked for everything
    ],
)
def test_start_up_filter_applies_tensorflows_own_threshold(level, driver, kept):
    keep = start_up_line_filter(level, cuda_driver=driver)
    assert [i for i, line in enumerate(CAPTURED) if keep(line)] == kept


def test_filtered_stderr_copies_back_what_it_keeps_even_when_the_block_fails(capfd):
    keep = start_up_line_filter(2, cuda_driver=False)
    with pytest.raises(RuntimeError), filtered_stderr(keep):
        os.write(2, ("\n".join(CAPTURED) + "\n").encode())  # as C++ writes: past sys.stderr
        raise RuntimeError("import failed")
    assert capfd.readouterr().err.splitlines() == [CAPTURED[i] for i in (5, 6, 8, 9)]
