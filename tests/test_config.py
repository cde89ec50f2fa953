"""Config composition and validation: recipes, groups, overrides, typos, bad values."""

from __future__ import annotations

import pytest

from kerasdiag.config import CONF_DIR, load_config
from kerasdiag.errors import ConfigError

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


@pytest.mark.parametrize("group", ["optimizer", "schedule", "data", "model", "loss"])
def test_every_group_option_composes(group, tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    for option in options(group):
        paths = {"npz": [f"data.path={npz}"], "csv": [f"data.path={npz}", "data.target=y"],
                 "image_folder": [f"data.path={tmp_path}"]}  # fmt: skip
        extra = paths.get(option, []) if group == "data" else []
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
