"""tf.distribute on CPU: MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its devices, which the
test process has long done, so the checks run in a fresh interpreter and report as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.modeling.distribute import get_strategy
    from kerasdiag.core.errors import ConfigError
    from kerasdiag.training.pipeline import run_training
    from kerasdiag.modeling.factory import build_model

    names = ("none", "auto", "mirrored", "multiworker")
    out = {name: get_strategy(name).num_replicas_in_sync for name in names}
    out["same_instance"] = get_strategy("mirrored") is get_strategy("mirrored")
    try:
        get_strategy("horovod")
    except ConfigError as exc:
        out["bad_name"] = str(exc)

    # One SGD step on one global batch of 64 real digits: on one device, on two replicas
    # (32 examples each), and on two replicas with the linear learning-rate scaling.
    base = ["optimizer=sgd", "optimizer.lr=0.5", "model.hidden_units=[16]"]
    data = load_dataset(load_config(base).data)
    x, y = data.x_train[:64], data.y_train[:64]
    steps = {}
    for name, extra in [
        ("one", []),
        ("mirrored", ["trainer.strategy=mirrored"]),
        ("scaled", ["trainer.strategy=mirrored", "trainer.scale_lr=true"]),
    ]:
        model = build_model(load_config(base + extra), data)
        variable = model.trainable_variables[0].value
        local = model.distribute_strategy.experimental_local_results(variable)
        out[f"{name}_copies"] = len(local)
        out[f"{name}_devices"] = sorted({v.device.split(":")[-1] for v in local})
        before = [v.numpy() for v in model.trainable_variables]
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        steps[name] = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
    out["mirrored_vs_one"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(steps["mirrored"], steps["one"])
    )
    out["scaled_vs_twice_one"] = max(
        float(np.max(np.abs(a - 2 * b))) for a, b in zip(steps["scaled"], steps["one"])
    )
    out["step_size"] = max(float(np.max(np.abs(b))) for b in steps["one"])

    # The whole pipeline (tf.data input, callbacks, checkpoint, test) on two replicas.
    cfg = load_config(
        ["trainer.strategy=mirrored", "trainer.epochs=3", "trainer.verbose=0",
         "trainer.tensorboard=false", "model.hidden_units=[32]"]
    )
    summary = run_training(cfg, sys.argv[1])
    out["pipeline_test_accuracy"] = summary["test"]["accuracy"]
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mirrored") / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), run_dir


def test_strategy_names_map_to_replica_counts(two_replicas):
    out, _ = two_replicas
    # "auto" stays on one device without GPUs or a TF_CONFIG cluster; without TF_CONFIG
    # the multi-worker strategy is one local worker (on CPU: one replica).
    assert (out["none"], out["auto"], out["mirrored"], out["multiworker"]) == (1, 1, 2, 1)
    assert out["same_instance"]
    assert "trainer.strategy='horovod'" in out["bad_name"]


def test_build_model_mirrors_variables_on_both_devices(two_replicas):
    out, _ = two_replicas
    assert (out["one_copies"], out["mirrored_copies"]) == (1, 2)
    assert out["mirrored_devices"] == ["0", "1"]


def test_global_batch_is_split_and_gradients_averaged(two_replicas):
    out, _ = two_replicas
    # Two replicas of 32 take the step one device takes on 64: gradients are averaged over
    # the global batch, not summed or taken per replica.
    assert out["step_size"] > 1e-3
    assert out["mirrored_vs_one"] < 1e-6
    # scale_lr doubles the learning rate on two replicas, hence the SGD step.
    assert out["scaled_vs_twice_one"] < 1e-6


def test_pipeline_trains_on_two_replicas(two_replicas):
    out, run_dir = two_replicas
    assert out["pipeline_test_accuracy"] > 0.8  # measured 0.872 (chance is 0.1)
    assert (run_dir / "metrics.csv").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.keras"))


@pytest.mark.parametrize(
    ("tf_config", "expected"),
    [
        (None, "none"),  # no GPU on the test machine, no cluster
        ('{"cluster": {"worker": ["host1:2222"]}, "task": {"type": "worker", "index": 0}}', "none"),
        (
            '{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222"]},'
            ' "task": {"type": "chief", "index": 0}}',
            "multiworker",
        ),
    ],
)
def test_auto_picks_multiworker_only_for_a_cluster(monkeypatch, tf_config, expected):
    from kerasdiag.modeling.distribute import resolve_strategy_name

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert resolve_strategy_name("auto") == expected
    assert resolve_strategy_name("mirrored") == "mirrored"
