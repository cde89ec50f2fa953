"""Config composition and validation: recipes, groups, overrides, typos, bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict

import pytest
from omegaconf import OmegaConf

from kerasdiag.config import CONF_DIR, load_config
from kerasdiag.config.schema import (
    EnsembleConfig,
    LossConfig,
    MonitorsConfig,
    OptimizerConfig,
    SanityConfig,
    ScheduleConfig,
    TunerConfig,
)
from kerasdiag.core.errors import ConfigError

from conftest import REPO

GROUPS = ["data", "model", "loss", "optimizer", "schedule", "trainer", "sanity", "monitors",
          "tuner", "ensemble", "recipe"]  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_default_is_the_offline_digits_recipe():
    cfg = load_config()
    assert cfg.recipe == "digits_softmax"
    assert cfg.data.name == "digits" and cfg.model.builder == "recipes.models.mlp"
    assert cfg.loss.name == "softmax"


@pytest.mark.parametrize("recipe", options("recipe"))
def test_every_recipe_composes_and_validates(recipe, tmp_path):
    overrides = [f"recipe={recipe}"]
    if recipe == "tabular_mlp":  # a recipe for your own table: it needs one
        with pytest.raises(ConfigError, match="data.path=None: data.name=csv needs the path"):
            load_config(overrides)
        (tmp_path / "t.csv").write_text("x,y\n1,a\n2,b\n")
        overrides += [f"data.path={tmp_path / 't.csv'}", "data.target=y"]
    cfg = load_config(overrides)
    assert cfg.recipe == recipe


def test_recipes_select_their_pieces():
    svm = load_config(["recipe=cifar_svm"])
    assert (svm.data.name, svm.model.builder, svm.loss.name) == (
        "cifar10", "recipes.models.convnet", "multiclass_hinge",
    )  # fmt: skip
    focal = load_config(["recipe=cifar_focal"])
    assert focal.loss.name == "focal" and focal.data.imbalance == 0.1


def test_command_line_choices_win_over_the_recipe():
    cfg = load_config(["recipe=cifar_softmax", "optimizer=sgd_nesterov", "optimizer.lr=0.01"])
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (
        "sgd",
        0.9,
        True,
    )
    assert cfg.optimizer.lr == 0.01 and cfg.model.builder == "recipes.models.convnet"
    cfg = load_config(["optimizer=adam", "optimizer.lr=3e-4", "schedule=step", "trainer.epochs=3"])
    assert (cfg.optimizer.lr, cfg.schedule.name, cfg.trainer.epochs) == (3e-4, "step", 3)


# A regression or multi-label option needs data and a loss of its task (else refused).
REGRESSION = ["trainer.checkpoint_monitor=val_loss"]
TASK_PARTNERS = {
    "diabetes": ["loss=mse", *REGRESSION],
    "digits_attributes": ["loss=multilabel"],
    **{loss: ["data=diabetes", *REGRESSION] for loss in ("mse", "mae", "huber")},
    "multilabel": ["data=digits_attributes"],
}


@pytest.mark.parametrize("group", ["optimizer", "schedule", "data", "model", "loss"])
def test_every_group_option_composes(group, tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    for option in options(group):
        paths = {"npz": [f"data.path={npz}"], "csv": [f"data.path={npz}", "data.target=y"],
                 "image_folder": [f"data.path={tmp_path}"], "tfrecord": [f"data.path={npz}"]}  # fmt: skip
        extra = paths.get(option, []) if group == "data" else []
        extra += TASK_PARTNERS.get(option, [])
        cfg = load_config([f"{group}={option}", *extra])
        assert cfg[group] is not None


def test_every_group_named_by_the_primary_config_exists():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("data.batch_size=-4", "data.batch_size"),
        ("model.dropout=[1.2]", "model.dropout"),
        ("model.activation=relux", "model.activation"),
        ("optimizer.momentum=1.5", "optimizer.momentum"),
        ("schedule.factor=2", "schedule.factor"),
        ("model.l2=-0.1", "model.l2"),
        ("data.path=/no/such/folder", "data.path"),
        ("data=npz", "data.path"),
    ],
)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert err.value.key == key
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optimizer=foo"], "optimizer/foo"),
        (["recipe=nope"], "recipe/nope"),
        (["optimizer.lrr=1"], "lrr"),
        (["optimizer.lr=abc"], "optimizer.lr"),
        (["trainer.epochs=1.5"], "trainer.epochs"),
    ],
)
def test_unknown_choices_typos_and_wrong_types_fail_in_composition(overrides, needle):
    with pytest.raises(ConfigError) as err:  # Hydra / OmegaConf errors, before TensorFlow
        load_config(overrides)
    line = str(err.value)
    assert needle in line and "\n" not in line


def test_clipping_choices_conflict_is_reported():
    with pytest.raises(ConfigError, match="global_clipnorm"):
        load_config(["optimizer.clipnorm=1.0", "optimizer.global_clipnorm=1.0"])


# -- every group validated before TensorFlow starts, the doctor's keys included ----------------

# Run scripts/train.py with TensorFlow made unimportable: a check that ran after TensorFlow
# started would fail with an ImportError traceback instead of the one line asserted here.
_NO_TF_TRAIN = (
    "import runpy, sys\n"
    "sys.modules['tensorflow'] = None\n"
    "sys.argv = ['train.py', *sys.argv[1:]]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ("monitors.doctor_stop_on=[nna]", "monitors.doctor_stop_on", "unknown symptoms ['nna']"),
        ("monitors.doctor_budget=5", "monitors.doctor_budget", "must be a number in (0, 1]"),
        ("+monitors.doctor_thresholds.foo=1", "monitors.doctor_thresholds.foo",
         "unknown threshold 'foo'"),
        ("+monitors.doctor_thresholds.slow_drop=0.0", "monitors.doctor_thresholds.slow_drop",
         "must be a finite number > 0"),
    ],
)  # fmt: skip
def test_bad_doctor_settings_are_refused_before_tensorflow_starts(tmp_path, override, key, reason):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TF_TRAIN, override, f"hydra.run.dir={run_dir}"],
        cwd=REPO / "scripts", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid config: {key}="), lines
    assert reason in lines[0]
    assert not run_dir.exists()
    with pytest.raises(ConfigError) as err:  # the same rule in load_config
        load_config([override])
    assert err.value.key == key


def test_load_config_validates_without_tensorflow():
    code = (
        "import sys\n"
        "from kerasdiag.config import load_config\n"
        "from kerasdiag.core.errors import ConfigError\n"
        "load_config(['tuner=coarse_to_fine', 'monitors.doctor_budget=0.5'])\n"
        "load_config(['ensemble=seeds'])\n"
        "try:\n"
        "    load_config(['monitors.doctor_budget=5'])\n"
        "except ConfigError as exc:\n"
        "    print(exc.key)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.stdout.split() == ["monitors.doctor_budget", "False"], done.stderr[-2000:]


def test_composition_errors_are_made_from_the_exceptions_fields():
    with pytest.raises(ConfigError) as err:
        load_config(["optimizer=foo"])
    assert (err.value.key, err.value.value) == ("optimizer", "foo")
    assert "adam" in err.value.requirement  # the options Hydra offers
    with pytest.raises(ConfigError) as err:
        load_config(["trainer.epochs=1.5"])
    assert (err.value.key, err.value.value) == ("trainer.epochs", 1.5)


# -- no YAML repeats a default of its dataclass ------------------------------------------------

# conf/data, conf/model and conf/trainer are checked by the same rule once their owners move
# their defaults (trainer/default.yaml repeats TrainerConfig today).
DEDUPED_GROUPS = {
    "optimizer": OptimizerConfig, "schedule": ScheduleConfig, "loss": LossConfig,
    "monitors": MonitorsConfig, "sanity": SanityConfig, "tuner": TunerConfig,
    "ensemble": EnsembleConfig,
}  # fmt: skip


@pytest.mark.parametrize("group", sorted(DEDUPED_GROUPS))
def test_no_yaml_repeats_a_dataclass_default(group):
    defaults = asdict(DEDUPED_GROUPS[group]())
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        values = OmegaConf.to_container(OmegaConf.load(path)) or {}
        values.pop("defaults", None)
        repeated = {k: v for k, v in values.items() if k in defaults and defaults[k] == v}
        # "name" says which option this is even when it is the default's name
        repeated.pop("name", None)
        assert not repeated, f"{path.name} repeats defaults of {group}: {repeated}"


def test_aliases_compose_like_their_originals():
    for alias, original in (("sgd_nesterov", "nesterov"), ("sgd_momentum", "momentum")):
        assert load_config([f"optimizer={alias}"]) == load_config([f"optimizer={original}"])


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("trainer.epoch=3", "trainer.epoch='3': Key 'epoch' not in 'TrainerConfig' (did you mean trainer.epochs?)"),
        ("model.hiden_units=[3]", "model.hiden_units='[3]': Key 'hiden_units' is not in struct (did you mean model.hidden_units?)"),
        ("+trainer.epoch=3", "trainer.epoch=3: unknown key (not in the config schema) (did you mean trainer.epochs?)"),
        ("trainer.zzzzqq=1", "trainer.zzzzqq='1': Key 'zzzzqq' not in 'TrainerConfig'"),
    ],
)  # fmt: skip
def test_an_unknown_key_shows_the_value_typed_and_the_closest_key(override, line):
    with pytest.raises(ConfigError) as info:
        load_config([override])
    assert str(info.value) == f"invalid config: {line}"
