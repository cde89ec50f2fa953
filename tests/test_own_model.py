"""A model builder of your own, from YAML the Hydra way: ``model._target_`` with its own
keyword arguments, the config's layer settings through ``kerasdiag.modeling.blocks.Layers``, the same
guards on imported code as ``model.builder``."""

from __future__ import annotations

import sys
import textwrap

import keras
import pytest
from hydra import initialize_config_dir

from kerasdiag.checks.sanity import run_sanity_stages
from kerasdiag.config import CONF_DIR, load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.data import load_dataset
from kerasdiag.modeling.factory import build_model

from conftest import run_train

NETS = '''
import keras


def resnet(input_shape, num_classes, *, blocks=1, width=8, layers):
    """Residual blocks of two convolutions, global pooling, logits."""
    inputs = keras.Input(input_shape)
    x = layers.norm_act(layers.conv2d(width)(inputs), "stem")
    for i in range(blocks):
        y = layers.norm_act(layers.conv2d(width)(x), f"b{i}a")
        y = layers.norm_act(layers.conv2d(width)(y), f"b{i}b", activation=False)
        x = keras.layers.Activation(layers.activation)(keras.layers.Add()([x, y]))
    x = layers.drop(keras.layers.GlobalAveragePooling2D()(x), 0, 1, "head")
    return keras.Model(inputs, layers.logits(x, num_classes), name=f"resnet{blocks}")


def plain(input_shape, num_classes, units=16):
    """Declares no layers parameter: l2, dropout and batch norm cannot reach it."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(units, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def deaf(input_shape, num_classes, *, layers):
    """Takes the layers settings and never uses them: regularization never reaches it."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
'''


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A user's own package (``mynets``) and config folder (``conf/model/my_resnet.yaml``)."""
    root = tmp_path_factory.mktemp("user")
    (root / "mynets.py").write_text(NETS)
    (root / "conf" / "model").mkdir(parents=True)
    (root / "conf" / "model" / "my_resnet.yaml").write_text(
        textwrap.dedent("""\
            # my own residual network
            _target_: mynets.resnet
            blocks: 1
            width: 8
            l2: 0.0001
            """)
    )
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("mynets", None)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_config(["data.limit=300"]).data)


@pytest.fixture(autouse=True, scope="module")
def hydra_once():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield


def cfg_for(user_dir, *overrides: str):
    return load_config([f"hydra.searchpath=[file://{user_dir / 'conf'}]", *overrides])


def test_own_builder_takes_its_own_arguments_and_the_layer_settings(user_dir, digits):
    cfg = cfg_for(
        user_dir,
        "model=my_resnet",
        "model.blocks=3",
        "model.dropout=[0.25]",
        "model.batch_norm=true",
    )
    model = build_model(cfg, digits)
    assert model.name == "resnet3"
    layers = model.layers
    assert sum(isinstance(la, keras.layers.Add) for la in layers) == 3
    assert [la.rate for la in layers if isinstance(la, keras.layers.Dropout)] == [0.25]
    assert sum(isinstance(la, keras.layers.BatchNormalization) for la in layers) == 7
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    assert len(model.losses) == len(kernels) == 8  # 7 convolutions and the logits, no biases
    # He init for relu: the stem's kernel variance is 2 / fan_in (3 * 3 * 1 inputs)
    stem = next(la for la in layers if isinstance(la, keras.layers.Conv2D)).kernel
    assert float(keras.ops.var(stem)) == pytest.approx(2 / 9, rel=0.6)
    # the config's strength is what reaches the kernels
    expected = sum(1e-4 * float(keras.ops.sum(keras.ops.square(k))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_own_builder_trains_and_passes_the_sanity_stages(user_dir, digits, tmp_path):
    cfg = cfg_for(user_dir, "model=my_resnet", "sanity.gradcheck=false", "sanity.lr_range=false")
    model = build_model(cfg, digits)
    results = {
        r.name: r
        for r in run_sanity_stages(
            cfg, model, digits, tmp_path, lambda **o: build_model(cfg, digits, **o)
        )
    }
    assert results["regularization"].status == "pass", results["regularization"].message
    assert results["initial_loss"].status == "pass", results["initial_loss"].message


def test_a_builder_that_ignores_the_layer_settings_fails_the_regularization_stage(
    user_dir, digits, tmp_path
):
    cfg = cfg_for(user_dir, "model._target_=mynets.deaf", "model.l2=0.001")
    for key in ("gradcheck", "initial_loss", "overfit", "leakage", "split_shift"):
        cfg.sanity[key] = False
    for key in ("input_baseline", "batch_independence", "lr_range"):
        cfg.sanity[key] = False
    build = lambda **o: build_model(cfg, digits, **o)  # noqa: E731
    result = run_sanity_stages(cfg, build(), digits, tmp_path, build)
    regularization = next(r for r in result if r.name == "regularization")
    assert regularization.status == "fail"
    assert "never reaches the loss" in regularization.message


def test_settings_a_builder_cannot_receive_are_refused_in_one_line(user_dir, digits):
    for override, key in [
        ("model.l2=0.001", "model.l2"),
        ("model.dropout=[0.5]", "model.dropout"),
        ("model.batch_norm=true", "model.batch_norm"),
    ]:
        base = ["model._target_=mynets.plain", "model.l2=0", override]
        with pytest.raises(ConfigError) as err:
            build_model(cfg_for(user_dir, *base), digits)
        assert err.value.key == key and "declares neither a 'layers'" in str(err.value)
        assert "\n" not in str(err.value)
    # several at once (a recipe's model section): all named in the one line
    with pytest.raises(ConfigError) as err:
        build_model(cfg_for(user_dir, "model._target_=mynets.plain", "model.l2=0.001",
                            "model.dropout=[0.5]", "model.batch_norm=true"), digits)  # fmt: skip
    assert "model.l2=0.001, model.dropout=[0.5], model.batch_norm=True" in str(err.value)
    # with everything off it builds, and the regularization stage says why it has nothing to do
    cfg = cfg_for(user_dir, "model._target_=mynets.plain", "model.l2=0", "+model.units=5")
    model = build_model(cfg, digits)
    assert model.layers[2].units == 5
    from kerasdiag.checks.sanity.stages import _regularization

    result = _regularization(cfg, {}, model, digits, None, None)
    assert result.passed is None and "cannot reach it" in result.message


def test_a_run_refused_for_its_model_settings_leaves_no_directory(user_dir, tmp_path, monkeypatch):
    """The refusal comes once the builder is imported, after the run recorded its config and
    data: the directory goes, so the corrected command starts afresh instead of being told it
    would resume a run that never trained with another config."""
    monkeypatch.setenv("PYTHONPATH", str(user_dir))
    run_dir = tmp_path / "run"
    common = [f"hydra.searchpath=[file://{user_dir / 'conf'}]", "model._target_=mynets.plain",
              "data.limit=300", "trainer.epochs=1", "sanity=off", f"hydra.run.dir={run_dir}"]  # fmt: skip
    refused = run_train(*common, "model.l2=0.001", "model.dropout=[0.5]")
    assert refused.returncode == 2, refused.stderr
    assert "model.l2=0.001, model.dropout=[0.5]" in refused.stderr
    assert not run_dir.exists()
    fixed = run_train(*common, "model.l2=0", "model.dropout=[]")
    assert fixed.returncode == 0, fixed.stderr
    assert (run_dir / "report.html").is_file()


def test_arguments_the_builder_does_not_take_are_refused(user_dir, digits):
    with pytest.raises(ConfigError, match="model.depth.*takes no argument 'depth'.*blocks"):
        build_model(cfg_for(user_dir, "model=my_resnet", "+model.depth=3"), digits)
    # without a _target_ the section stays closed: a typo is an unknown key
    with pytest.raises(ConfigError, match="model.blocks.*unknown key"):
        load_config(["+model.blocks=3"])


def test_schema_keys_stay_typed_in_the_open_model_section(user_dir):
    with pytest.raises(ConfigError) as err:
        cfg_for(user_dir, "model=my_resnet", "model.l2=abc")
    assert err.value.key == "model.l2"
    cfg = cfg_for(user_dir, "model=my_resnet", "model.l2=1")
    assert isinstance(cfg.model.l2, float)  # converted as the schema says


def test_code_named_by_target_is_guarded_like_the_builder(user_dir):
    for target in ("os.system", "subprocess.call", "builtins.eval"):
        with pytest.raises(ConfigError, match="model._target_.*standard-library"):
            load_config([f"model._target_={target}"])
    with pytest.raises(ConfigError, match="model._target_.*No module named 'nosuchpkg'"):
        load_config(["model._target_=nosuchpkg.nets.build"])
    with pytest.raises(ConfigError, match="model._target_.*defines no 'nothing'"):
        cfg_for(user_dir, "model._target_=mynets.nothing")
    with pytest.raises(ConfigError, match="model._target_.*dotted path"):
        load_config(["model._target_=eval"])


def test_hydra_special_keys_other_than_target_are_refused(user_dir, digits):
    cfg = cfg_for(user_dir, "model=my_resnet", "+model._partial_=true")
    with pytest.raises(ConfigError, match="model._partial_.*only _target_"):
        build_model(cfg, digits)


def test_layers_is_usable_on_its_own():
    from kerasdiag.modeling.blocks import Layers

    layers = Layers(activation="tanh", l2=0.01, dropout=[0.5], batch_norm=True)
    dense = layers.dense(4)
    assert layers.initializer() == "glorot_uniform" and dense.kernel_regularizer is not None
    assert layers.conv2d(4).use_bias is False  # batch norm's beta is the bias
    assert Layers(dropout=[0.1, 0.2]).drop(keras.Input((3,)), 1, 2, "b").shape == (None, 3)


def test_cifar_resnet_recipe_is_resnet20_with_its_training_recipe():
    from kerasdiag.modeling.losses import SparseSmoothedCrossentropy

    cfg = load_config(["recipe=cifar_resnet"])
    assert (cfg.optimizer.name, cfg.optimizer.nesterov, cfg.optimizer.momentum) == (
        "sgd",
        True,
        0.9,
    )
    assert cfg.schedule.name == "cosine" and cfg.schedule.warmup_epochs > 0
    assert cfg.data.augment.flip and cfg.data.augment.crop == 4

    class Shapes:
        input_shape, num_classes, y_train = (32, 32, 3), 10, [0] * 45000

    model = build_model(cfg, Shapes())
    assert model.name == "resnet20"
    assert 0.26e6 < model.count_params() < 0.28e6  # He et al.: 0.27M
    assert sum(isinstance(la, keras.layers.Add) for la in model.layers) == 9
    assert isinstance(model.loss, SparseSmoothedCrossentropy) and model.loss.label_smoothing == 0.1
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert all(c.kernel_regularizer is not None and not c.use_bias for c in convs)
    gammas = [la.gamma for la in model.layers if la.name.endswith("_2_bn")]
    assert len(gammas) == 9 and not any(keras.ops.any(g) for g in gammas)  # identity blocks
    deeper = build_model(
        load_config(
            ["recipe=cifar_resnet", "model.blocks_per_stage=5", "model.zero_init_residual=false"]
        ),
        Shapes(),
    )
    assert deeper.name == "resnet32"
    assert all(keras.ops.all(la.gamma) for la in deeper.layers if la.name.endswith("_2_bn"))


def test_label_smoothing_floor_is_the_overfit_target_in_the_cli_stage(digits, tmp_path):
    # smoothed targets put a floor under the loss (0.50 for 10 classes at 0.1): the overfit
    # check judges the loss above that floor, so a healthy model memorises with smoothing on
    from kerasdiag.checks.sanity.stages import _overfit

    cfg = load_config(["loss.label_smoothing=0.1", "model.l2=0"])
    model = build_model(cfg, digits)
    assert model.loss.label_smoothing == 0.1
    settings = {"overfit_examples": 20, "overfit_max_steps": 300, "overfit_loss_fraction": 0.05}
    result = _overfit(cfg, settings, model, digits, tmp_path, None)
    assert result.status == "pass", result.message
    assert result.value > 0.45, result.message  # trained with smoothing on, above the floor
