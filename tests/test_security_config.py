"""Generated configs thrown at load_config: bad ones fail as one ConfigError line naming the
key they broke, good ones pass with the values they asked for; nothing else ever escapes."""

from __future__ import annotations

import keyword
import math

import pytest
from hydra import initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasdiag.config import CONF_DIR, load_config
from kerasdiag.config.checks import MAX_INT, MAX_SEED
from kerasdiag.core.activations import RECIPE_ACTIVATIONS as ACTIVATIONS
from kerasdiag.core.errors import ConfigError

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module", autouse=True)
def hydra_once():
    # One Hydra initialisation for the module: load_config then only composes (~5x faster).
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield


# -- bad values, by the kind of key ------------------------------------------------------------

POSITIVE_INTS = ["data.batch_size", "data.shuffle_buffer", "trainer.epochs", "model.kernel_size",
                 "schedule.drop_every", "sanity.overfit_examples", "monitors.probe_size"]  # fmt: skip
POSITIVE_FLOATS = ["optimizer.lr", "optimizer.epsilon", "loss.margin"]
FRACTIONS = ["data.val_fraction", "schedule.factor"]  # open interval (0, 1)
CHOICES = {
    "data.name": {"digits", "cifar10", "npz", "image_folder", "csv", "tfrecord"},
    "model.activation": ACTIVATIONS,
    "loss.name": {"softmax", "multiclass_hinge", "focal", "binary"},
    "optimizer.name": {"sgd", "adagrad", "rmsprop", "adam", "adamw"},
    "trainer.strategy": {"none", "auto", "mirrored", "multiworker"},
    "trainer.checkpoint_monitor": {"loss", "accuracy", "val_loss", "val_accuracy"},
    "tuner.name": {"none", "random", "coarse_to_fine"},
    "ensemble.name": {"none", "seeds", "topk", "checkpoints", "ema"},
}
BOOLS = ["trainer.resume", "trainer.deterministic", "data.normalize", "model.batch_norm"]
GROUPS = {"recipe", "optimizer", "schedule", "data", "model", "loss"}
SEEDS = ["trainer.seed", "data.seed"]

# Text that is never a number, bool or list on the command line.
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda w: w not in {"true", "false", "yes", "no", "on", "off", "null", "nan", "inf"}
)
not_number = st.one_of(words, st.sampled_from(["[1]", "{a:1}", "null", "''", "${nope}"]))
# Only command-line booleans count as booleans (yes/no/on/off too).
not_bool = st.one_of(
    words.filter(lambda w: w not in {"y", "n"}), st.sampled_from(["[1]", "null", "0.5"])
)


def _num(x: float) -> str:
    return "nan" if math.isnan(x) else repr(x)


@st.composite
def bad_override(draw) -> tuple[str, str]:
    """(override, the key its error must name)."""
    kind = draw(st.sampled_from(
        ["int", "float", "fraction", "choice", "bool", "seed", "list", "group", "unknown"]
    ))  # fmt: skip
    if kind == "int":
        key = draw(st.sampled_from(POSITIVE_INTS))
        value = draw(st.one_of(
            st.integers(max_value=0).map(str),
            st.integers(min_value=MAX_INT + 1, max_value=10**30).map(str),
            st.sampled_from(["1.5", "-0.5"]), not_number,
        ))  # fmt: skip
    elif kind == "float":
        key = draw(st.sampled_from(POSITIVE_FLOATS))
        value = draw(st.one_of(
            st.floats(max_value=0.0).map(_num), st.sampled_from(["nan", "inf"]), not_number,
        ))  # fmt: skip
    elif kind == "fraction":
        key = draw(st.sampled_from(FRACTIONS))
        value = draw(st.one_of(
            st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan),
        ).map(_num) | not_number)  # fmt: skip
    elif kind == "choice":
        key = draw(st.sampled_from(sorted(CHOICES)))
        value = draw(words.filter(lambda w, k=key: w not in CHOICES[k]))
    elif kind == "bool":
        key, value = draw(st.sampled_from(BOOLS)), draw(not_bool)
    elif kind == "seed":
        key = draw(st.sampled_from(SEEDS))
        value = str(draw(st.integers(max_value=-1) | st.integers(min_value=MAX_SEED + 1)))
    elif kind == "list":
        key = draw(st.sampled_from(["model.hidden_units", "model.dropout"]))
        good = st.integers(1, 64) if key == "model.hidden_units" else st.floats(0.0, 0.9)
        bad = st.integers(max_value=0) if key == "model.hidden_units" else st.floats(min_value=1.0)
        items = draw(st.lists(good, max_size=3)) + [draw(bad)]
        value = (
            "[" + ",".join(_num(float(v)) if isinstance(v, float) else str(v) for v in items) + "]"
        )
    elif kind == "group":
        key = draw(st.sampled_from(sorted(GROUPS)))
        value = draw(words.filter(lambda w: w not in {
            "adam", "sgd", "nesterov", "momentum", "adagrad", "rmsprop", "adamw", "constant",
            "step", "exponential", "inverse_time", "plateau", "cosine", "digits", "npz",
            "mlp", "convnet", "softmax", "focal", "multiclass_hinge", "binary", "resnet", "csv",
            "image_folder", "tabular_mlp", "cifar_resnet",
        }))  # fmt: skip
    else:  # a key the schema does not have, added (+) or overridden
        section = draw(st.sampled_from(["", "optimizer.", "trainer.", "data.augment."]))
        name = draw(words.filter(lambda w: not keyword.iskeyword(w)))
        key = f"{section}{name}x"  # "x": never an existing key such as lr or seed
        value = "1"
        return f"{draw(st.sampled_from(['', '+']))}{key}={value}", key
    return f"{key}={value}", key


@SETTINGS
@given(bad_override())
def test_a_bad_value_is_one_config_error_line_naming_its_key(case):
    override, key = case
    with pytest.raises(ConfigError) as err:
        load_config([override])
    message = str(err.value)
    assert "\n" not in message and message.startswith("invalid config: ")
    assert err.value.key.split("[")[0] == key or key in message, (override, message)


@SETTINGS
@given(st.text(max_size=30))
def test_any_text_as_an_override_never_crashes(text):
    # Whatever a person types: a valid config or one ConfigError line, nothing else.
    try:
        load_config([text])
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_a_stdlib_function_is_never_a_model_builder():
    with pytest.raises(ConfigError, match="model.builder.*standard-library"):
        load_config(["model.builder=os.system"])
    with pytest.raises(ConfigError, match="model.builder.*standard-library"):
        load_config(["model.builder=subprocess.call"])


def test_syntax_error_names_the_override_among_several():
    with pytest.raises(ConfigError) as err:
        load_config(["optimizer.lr=0.01", "trainer.epochs=[", "data.batch_size=8"])
    assert err.value.key == "trainer.epochs"


# -- good configs pass, with the values asked for ----------------------------------------------


@st.composite
def good_overrides(draw) -> dict[str, object]:
    values: dict[str, object] = {
        "optimizer.lr": draw(st.floats(1e-6, 1.0)),
        "data.batch_size": draw(st.integers(1, 4096)),
        "data.val_fraction": draw(st.floats(0.01, 0.9)),
        "trainer.epochs": draw(st.integers(2, 500)),  # cosine warms up for 1 epoch
        "trainer.seed": draw(st.integers(0, MAX_SEED)),
        "model.activation": draw(st.sampled_from(sorted(ACTIVATIONS))),
        "model.hidden_units": draw(st.lists(st.integers(1, 1024), max_size=4)),
        "model.dropout": draw(st.lists(st.floats(0.0, 0.95), max_size=3)),
        "model.l2": draw(st.floats(0.0, 1.0)),
        "optimizer.momentum": draw(st.floats(0.01, 0.99)),
        "trainer.deterministic": draw(st.booleans()),
    }
    return values


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return repr(value)


@SETTINGS
@given(
    st.sampled_from(["adam", "sgd", "nesterov", "rmsprop", "adagrad"]),
    st.sampled_from(["constant", "step", "exponential", "inverse_time", "cosine", "plateau"]),
    good_overrides(),
)
def test_good_configs_pass_with_the_values_asked_for(optimizer, schedule, values):
    overrides = [f"optimizer={optimizer}", f"schedule={schedule}"]
    overrides += [f"{k}={_literal(v)}" for k, v in values.items()]
    cfg = load_config(overrides)
    for key, value in values.items():
        got = cfg
        for part in key.split("."):
            got = got[part]
        got = list(got) if isinstance(value, list) else got
        assert got == value, (key, got, value)
