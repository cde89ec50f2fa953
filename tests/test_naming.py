"""--help lists the recipes with a line each; runs are filed and titled after the data and
model they really used."""

from __future__ import annotations

import subprocess
import sys

from kerasdiag.config import CONF_DIR
from kerasdiag.core.naming import recipe_descriptions, run_name, run_title

from conftest import REPO, run_train


def test_help_lists_every_recipe_with_its_line():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--help"],
        capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipes = recipe_descriptions(CONF_DIR)
    assert {name for name, _ in recipes} >= {"digits_softmax", "cifar_resnet", "tabular_mlp"}
    listed = done.stdout[done.stdout.index("== Recipes ==") :]
    for name, line in recipes:
        assert line and not line.startswith("@package")
        assert any(row.split()[:1] == [name] and line in row for row in listed.splitlines())


def test_run_names_add_the_data_and_model_a_command_line_swapped():
    assert run_name(CONF_DIR, "digits_softmax", "digits", "mlp") == "digits_softmax"
    assert run_name(CONF_DIR, "cifar_softmax", "image_folder", "convnet") == (
        "cifar_softmax+image_folder"
    )
    assert run_name(CONF_DIR, "cifar_resnet", "cifar10", "my_resnet") == "cifar_resnet+my_resnet"
    title = run_title({"recipe": "cifar_softmax", "data": {"name": "csv", "path": "/x/wine.csv"},
                       "model": {"_target_": "mynets.resnet", "builder": "recipes.models.mlp"}})  # fmt: skip
    assert title == "cifar_softmax (data csv (wine.csv), model resnet)"


def test_a_run_with_another_model_is_filed_and_titled_under_it(tmp_path):
    done = run_train(
        "model=convnet", "model.conv_filters=[4]", "model.dense_units=[8]", "trainer.epochs=1",
        "sanity=off", "monitors=off", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "digits_softmax+convnet").iterdir()
    page = (run_dir / "report.html").read_text()
    assert "<title>kerasdiag report: digits_softmax (data digits, model convnet)</title>" in page
