"""Advice names what the reader can change: a recipe's config keys, or Keras for a user's fit."""

from __future__ import annotations

import re

import keras
import pytest
import yaml
from sklearn.datasets import load_digits

from kerasdiag.callbacks import TrainingDoctor
from kerasdiag.diagnosis import check_fixes, diagnose, symptoms
from kerasdiag.diagnosis.advice import config_terms, keras_terms, terms_for_run

# A recipe config key as the fix texts write them: model.l2, trainer.epochs, schedule=step ...
CONFIG_KEY = re.compile(r"\b(model|data|trainer|optimizer|schedule|sanity|loss|monitors)[.=][a-z]")


def every_fix_text() -> list[str]:
    texts = [symptoms.fix_for(name, 0.01) for name in symptoms.SYMPTOMS]
    texts += [symptoms.fix_for(name) for name in symptoms.SYMPTOMS]
    texts += [symptoms.variance_after_bias_fix(), *symptoms.nan_advice(0.1, 3, False)]
    texts += symptoms.nan_advice(0.1, 500, False)
    texts += [value for name, value in vars(check_fixes).items()
              if name.isupper() and isinstance(value, str)]  # fmt: skip
    return texts


def test_in_keras_terms_no_fix_names_a_config_key():
    assert any(CONFIG_KEY.search(t) for t in every_fix_text())  # the texts as written do
    for text in every_fix_text():
        rewritten = keras_terms().phrase(text)
        assert not CONFIG_KEY.search(rewritten), (text, rewritten)


def test_keras_terms_name_the_keras_change():
    nan = keras_terms().phrase(symptoms.fix_for("nan", 0.01))
    assert "learning_rate=0.001 in the optimizer; it is 0.01" in nan
    assert "global_clipnorm=1.0 in the optimizer" in nan
    under = keras_terms().phrase(symptoms.fix_for("underfitting"))
    assert "more units or layers)" in under and "epochs of fit" in under


DEFAULTS = {"hidden_units": [64], "conv_filters": [32, 64], "dense_units": [128], "l2": 1e-4}


@pytest.mark.parametrize(
    ("model_cfg", "named"),
    [
        # every model section holds the schema's defaults for all recipe builders' keys
        ({**DEFAULTS, "builder": "recipes.models.mlp"}, "model.hidden_units)"),
        ({**DEFAULTS, "builder": "recipes.models.convnet"},
         "model.conv_filters, model.dense_units)"),
        ({**DEFAULTS, "_target_": "recipes.models.resnet", "blocks_per_stage": 3,
          "widths": [16, 32, 64]}, "model.widths, model.blocks_per_stage)"),
        ({**DEFAULTS, "_target_": "mine.net"}, "the model config's size keys)"),
    ],
)  # fmt: skip
def test_a_recipe_run_is_told_its_own_model_keys(model_cfg, named):
    under = config_terms(model_cfg).phrase(symptoms.fix_for("underfitting"))
    assert f"more units or layers: {named}" in under
    assert "trainer.epochs" in under  # the recipe's keys stay


def test_a_run_directory_is_advised_by_what_made_it(tmp_path):
    """diagnose() of a recipe run names its config keys; of a user's fit (no config), Keras."""
    rows = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"]
    rows += [f"{e},{2.0 - 0.01 * e},{0.3 + 0.001 * e},{2.0},{0.3},0.001" for e in range(1, 11)]
    recipe_run, user_run = tmp_path / "recipe", tmp_path / "user"
    for run in (recipe_run, user_run):
        run.mkdir()
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (recipe_run / "config.yaml").write_text(
        yaml.safe_dump(
            {"model": {"_target_": "recipes.models.fast_convnet", "widths": [16, 32, 64]}}
        )
    )
    recipe = {f.symptom: f.fix for f in diagnose(recipe_run)}
    user = {f.symptom: f.fix for f in diagnose(user_run)}
    assert "underfitting" in recipe and "underfitting" in user
    assert "model.widths" in recipe["underfitting"]
    assert "model.hidden_units" not in recipe["underfitting"]
    for fix in user.values():
        assert not CONFIG_KEY.search(fix), fix
    assert isinstance(terms_for_run(None), type(keras_terms()))
    # the report's bias/variance table says the same as the diagnosis, in the same terms
    from kerasdiag.report.builder import build_report

    page = build_report(recipe_run).read_text()
    assert "model.widths" in page and "model.conv_filters" not in page


def test_the_doctor_in_a_users_fit_speaks_keras():
    """A real fit that breaks (learning rate 1e4): the doctor's fix names the optimizer's
    arguments, not kerasdiag's config keys."""
    digits = load_digits()
    x, y = (digits.data[:256] / 16).astype("float32"), digits.target[:256]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile(keras.optimizers.SGD(1e4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    doctor = TrainingDoctor(x[:32], y[:32], verbose=0)
    model.fit(x, y, batch_size=32, epochs=3, callbacks=[doctor], verbose=0)
    assert doctor.findings, "a rate of 1e4 breaks this model"
    for finding in doctor.findings:
        assert not CONFIG_KEY.search(finding.fix), finding.fix
    assert any("in the optimizer" in f.fix for f in doctor.findings)
