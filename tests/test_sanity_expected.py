"""expected_initial_loss: closed-form values, checked against the losses Keras really computes."""

from __future__ import annotations

import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasdiag.checks.sanity import expected_initial_loss
from kerasdiag.checks.sanity.expected import describe_loss, expected_initial_loss_with_reason
from kerasdiag.modeling.losses import MulticlassHinge, SparseCategoricalFocalLoss

C = 10
# Imbalanced real-looking labels: the values below must not depend on the balance
# (except where the loss itself weights classes).
RNG = np.random.default_rng(0)
LABELS = RNG.choice(C, size=4000, p=np.linspace(1, 10, C) / np.linspace(1, 10, C).sum())
PRIORS = np.bincount(LABELS, minlength=C) / len(LABELS)
ONE_HOT = np.eye(C, dtype="float32")[LABELS]
ZERO_LOGITS = np.zeros((len(LABELS), C), "float32")
UNIFORM = np.full((len(LABELS), C), 1.0 / C, "float32")


def keras_value(loss, y, outputs) -> float:
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    return float(np.mean(keras.ops.convert_to_numpy(fn(y, outputs))))


@pytest.mark.parametrize(
    ("loss", "y", "outputs", "closed_form"),
    [
        ("sparse_categorical_crossentropy", LABELS, UNIFORM, math.log(C)),
        ("categorical_crossentropy", ONE_HOT, UNIFORM, math.log(C)),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), LABELS, ZERO_LOGITS,
         math.log(C)),
        (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), ONE_HOT,
         ZERO_LOGITS, math.log(C)),
        (MulticlassHinge(), LABELS, ZERO_LOGITS, C - 1.0),
        (MulticlassHinge(margin=2.0), LABELS, ZERO_LOGITS, 2.0 * (C - 1)),
        (SparseCategoricalFocalLoss(gamma=2.0), LABELS, ZERO_LOGITS,
         (1 - 1 / C) ** 2 * math.log(C)),
        (SparseCategoricalFocalLoss(gamma=0.5, alpha=0.25), LABELS, ZERO_LOGITS,
         0.25 * (1 - 1 / C) ** 0.5 * math.log(C)),
        (keras.losses.CategoricalFocalCrossentropy(from_logits=True), ONE_HOT, ZERO_LOGITS,
         0.25 * (1 - 1 / C) ** 2 * math.log(C)),
        ("categorical_hinge", ONE_HOT, ZERO_LOGITS, 1.0),
        ("mse", ONE_HOT, ZERO_LOGITS, 1.0 / C),
        (keras.losses.MeanSquaredError(), ONE_HOT, ZERO_LOGITS, 1.0 / C),
    ],
)  # fmt: skip
def test_multiclass_expectation_is_what_keras_computes(loss, y, outputs, closed_form):
    expected = expected_initial_loss(loss, C, class_priors=PRIORS)
    assert expected == pytest.approx(closed_form, rel=1e-9)
    assert keras_value(loss, y, outputs) == pytest.approx(expected, rel=1e-5)


def test_textbook_values():
    # The expected initial losses: ln 10 = 2.302 for softmax, 9 for the SVM, ln 2 = 0.693 for binary.
    assert expected_initial_loss("sparse_categorical_crossentropy", 10) == pytest.approx(2.302585)
    assert expected_initial_loss(MulticlassHinge(margin=1.0), 10) == 9.0
    assert expected_initial_loss("binary_crossentropy", 1) == pytest.approx(0.693147)
    focal = SparseCategoricalFocalLoss(gamma=2.0)
    assert expected_initial_loss(focal, 10) == pytest.approx(0.81 * math.log(10))


@pytest.mark.parametrize("positive_share", [0.5, 0.1, 0.9])
def test_binary_losses_at_half(positive_share):
    y = (RNG.random((3000, 1)) < positive_share).astype("float32")
    priors = [1 - y.mean(), y.mean()]
    half = np.full_like(y, 0.5)
    zero = np.zeros_like(y)
    for loss, outputs in [
        ("binary_crossentropy", half),  # ln 2 whatever the balance
        (keras.losses.BinaryCrossentropy(from_logits=True), zero),
        (keras.losses.BinaryFocalCrossentropy(gamma=2.0), half),
        (keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3), half),
        ("hinge", zero),
        ("mse", zero),  # the share of positives
    ]:
        expected = expected_initial_loss(loss, 1, class_priors=priors)
        assert keras_value(loss, y, outputs) == pytest.approx(expected, rel=1e-5), loss
    assert expected_initial_loss("binary_crossentropy", 1, priors) == pytest.approx(math.log(2))


def test_per_class_alpha_is_averaged_under_the_priors():
    spec = keras.losses.CategoricalFocalCrossentropy(alpha=0.5)
    base = expected_initial_loss(spec, C)
    per_class = np.linspace(0.1, 1.0, C)

    class PerClassFocal(keras.losses.Loss):
        # a focal loss with one alpha per class, as a user might write it
        def __init__(self):
            super().__init__(name="focal")
            self.gamma, self.alpha, self.from_logits = 2.0, per_class, True

        def call(self, y_true, y_pred):
            y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
            one_hot = keras.ops.one_hot(y_true, C)
            p = keras.ops.softmax(y_pred)
            ce = -keras.ops.log(keras.ops.sum(one_hot * p, axis=-1))
            a = keras.ops.sum(one_hot * per_class, axis=-1)
            return a * (1 - keras.ops.sum(one_hot * p, axis=-1)) ** 2 * ce

    loss = PerClassFocal()
    expected = expected_initial_loss(loss, C, class_priors=PRIORS)
    assert expected == pytest.approx(base / 0.5 * float(per_class @ PRIORS))
    assert keras_value(loss, LABELS, ZERO_LOGITS) == pytest.approx(expected, rel=1e-5)


def test_rejects_what_it_cannot_know():
    with pytest.raises(ValueError, match="kl_divergence"):
        expected_initial_loss("kl_divergence", 10)
    with pytest.raises(ValueError, match="class_priors"):
        expected_initial_loss(keras.losses.BinaryFocalCrossentropy(), 1, class_priors=[1.0])
    with pytest.raises(ValueError, match="num_classes"):
        expected_initial_loss("sparse_categorical_crossentropy", 0)


def test_package_import_does_not_start_tensorflow():
    code = (
        "import sys\n"
        "from kerasdiag.checks.sanity import SanityCheckFailed, StageResult, expected_initial_loss\n"
        "from kerasdiag.core.errors import KerasdiagError\n"
        "assert issubclass(SanityCheckFailed, KerasdiagError)\n"
        "assert round(expected_initial_loss('categorical_crossentropy', 10), 3) == 2.303\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- how a loss is recognised (found by mutation testing) ----------------------------------


def test_a_loss_function_is_known_by_its_name():
    from kerasdiag.checks.sanity.expected import describe_loss

    spec = describe_loss(keras.losses.mean_squared_error)
    assert (spec.kind, spec.name, spec.sparse, spec.from_logits) == (
        "mse", "mean_squared_error", False, None
    )  # fmt: skip
    spec = describe_loss(keras.losses.sparse_categorical_crossentropy)
    assert (spec.kind, spec.sparse, spec.from_logits) == ("crossentropy", True, False)


def test_a_loss_object_brings_its_configuration():
    from kerasdiag.checks.sanity.expected import describe_loss

    spec = describe_loss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert (spec.kind, spec.name, spec.from_logits) == (
        "crossentropy", "SparseCategoricalCrossentropy", True
    )  # fmt: skip
    spec = describe_loss(keras.losses.CategoricalFocalCrossentropy(gamma=3.0, alpha=0.5))
    assert (spec.kind, spec.gamma, spec.alpha, spec.from_logits) == ("focal", 3.0, 0.5, False)
    spec = describe_loss(MulticlassHinge(margin=2.5))
    assert (spec.kind, spec.margin, spec.from_logits) == ("multiclass_hinge", 2.5, None)


def test_a_user_loss_class_is_known_by_its_name_when_its_class_is_not():
    from kerasdiag.checks.sanity.expected import describe_loss

    class MyLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    spec = describe_loss(MyLoss(name="mean_squared_error"))
    assert (spec.kind, spec.name) == ("mse", "MyLoss")
    with pytest.raises(ValueError, match="no expected initial value is known for 'MyLoss'"):
        describe_loss(MyLoss(name="my_loss"))


def test_per_class_alpha_of_the_wrong_length_names_both_counts():
    class Focal(keras.losses.Loss):  # a user's focal loss: alpha per class, gamma 0
        def __init__(self, alpha):
            super().__init__(name="focal")
            self.gamma, self.alpha, self.from_logits = 0.0, alpha, True

        def call(self, y_true, y_pred):
            return keras.ops.zeros_like(y_pred[:, 0])

    with pytest.raises(ValueError, match="alpha has 3 class weights but there are 10 classes"):
        expected_initial_loss(Focal([0.2, 0.3, 0.5]), C, class_priors=PRIORS)
    # integer weights are weights, averaged under the priors: sum_k alpha_k p_k ln C
    expected = float(np.dot(np.arange(1, C + 1), PRIORS)) * math.log(C)
    got = expected_initial_loss(Focal(list(range(1, C + 1))), C, class_priors=PRIORS)
    assert got == pytest.approx(expected, rel=1e-12)


# -- hand computations for what the class priors, per-class alphas and loss parameters change
# (each pins a behaviour mutation testing found unasserted) ------------------------------------


def test_per_class_alpha_is_averaged_under_the_priors_not_uniformly():
    focal = keras.losses.CategoricalFocalCrossentropy(alpha=[0.2, 0.4, 0.9], gamma=2.0)
    base = (1 - 1 / 3) ** 2 * math.log(3)
    uniform = expected_initial_loss(focal, 3)
    assert uniform == pytest.approx((0.2 + 0.4 + 0.9) / 3 * base, rel=1e-12)
    # unnormalised priors are shares: [2, 1, 1] -> [0.5, 0.25, 0.25]
    skewed = expected_initial_loss(focal, 3, class_priors=[2, 1, 1])
    assert skewed == pytest.approx((0.5 * 0.2 + 0.25 * 0.4 + 0.25 * 0.9) * base, rel=1e-12)
    as_column = expected_initial_loss(focal, 3, class_priors=np.array([[2.0], [1.0], [1.0]]))
    assert as_column == pytest.approx(skewed, rel=1e-12)  # any shape, read as a vector
    integer_alpha = keras.losses.CategoricalFocalCrossentropy(alpha=[1, 0, 0], gamma=0.0)
    assert expected_initial_loss(integer_alpha, 3, class_priors=[1, 1, 2]) == pytest.approx(
        0.25 * math.log(3), rel=1e-12
    )


def test_mse_on_one_output_is_the_share_of_positives():
    assert expected_initial_loss("mse", 1, class_priors=[3, 1]) == pytest.approx(0.25)
    assert expected_initial_loss("mse", 1) == pytest.approx(0.5)  # uniform: half positive
    assert expected_initial_loss("mse", 1, class_priors=[0, 5]) == pytest.approx(
        1.0
    )  # a zero share


@pytest.mark.parametrize(
    "priors", [[0.5, 0.5, 0.0, 0.0], [-0.1, 1.1], [0, 0], [[0.2, 0.8], [0, 0]]]
)
def test_bad_priors_are_refused(priors):
    with pytest.raises(ValueError, match="class_priors must hold 2 non-negative shares"):
        expected_initial_loss("mse", 1, class_priors=priors)


def test_binary_focal_balancing_uses_the_priors_and_alpha():
    loss = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=1.0)
    value = expected_initial_loss(loss, 1, class_priors=[0.2, 0.8])
    assert value == pytest.approx((0.8 * 0.3 + 0.2 * 0.7) * 0.5 * math.log(2), rel=1e-12)
    unbalanced = keras.losses.BinaryFocalCrossentropy(alpha=0.3, gamma=1.0)
    assert describe_loss(unbalanced).apply_class_balancing is False
    assert expected_initial_loss(unbalanced, 1) == pytest.approx(0.5 * math.log(2), rel=1e-12)


def test_loss_objects_are_read_through_their_config_and_attributes():
    hinge = MulticlassHinge(margin=2.5)
    assert describe_loss(hinge).margin == 2.5
    assert expected_initial_loss(hinge, 4) == pytest.approx(7.5)
    spec = describe_loss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert spec.from_logits is True and spec.kind == "crossentropy" and spec.sparse
    assert describe_loss("sparse_categorical_crossentropy").from_logits is False  # by name
    assert describe_loss(keras.losses.CategoricalFocalCrossentropy()).gamma == 2.0
    # a loss function (no get_config) is known by its __name__
    assert describe_loss(keras.losses.categorical_hinge).kind == "categorical_hinge"


class _Named:
    """A loss object known only by its ``name`` (no get_config, not a function)."""

    name = "focal"
    gamma = 3.0

    def __call__(self, y_true, y_pred):
        return 0.0


class _BadConfig(keras.losses.Loss):
    def __init__(self):
        super().__init__(name="multiclass_hinge")
        self.margin = 4.0

    def call(self, y_true, y_pred):
        return y_pred

    def get_config(self):
        raise NotImplementedError


def test_a_loss_known_by_its_name_and_one_whose_config_fails():
    spec = describe_loss(_Named())
    assert spec.kind == "focal" and spec.gamma == 3.0 and spec.name == "_Named"
    bad = describe_loss(_BadConfig())
    assert bad.kind == "multiclass_hinge" and bad.margin == 4.0


def test_unknown_losses_name_every_supported_kind():
    with pytest.raises(ValueError) as info:
        describe_loss(keras.losses.KLDivergence())
    message = str(info.value)
    assert message.startswith(
        "loss: no expected initial value is known for 'KLDivergence'; supported"
    )
    kinds = message.split("supported kinds: ")[1].split(", ")
    assert kinds == sorted(kinds) and {"crossentropy", "focal", "mse", "huber"} <= set(kinds)


def test_the_reasons_say_the_numbers_they_used():
    _, reason = expected_initial_loss_with_reason(MulticlassHinge(margin=2.0), 5)
    assert reason == "(C - 1) * margin = 4 * 2 for the Weston-Watkins hinge at zero scores"
    _, reason = expected_initial_loss_with_reason("binary_crossentropy", 1)
    assert reason == "ln 2 for binary cross-entropy at p = 0.5, whatever the balance"
    _, reason = expected_initial_loss_with_reason("mse", 1)
    assert reason == "the share of positive labels (mean y^2) for MSE at zero outputs"
