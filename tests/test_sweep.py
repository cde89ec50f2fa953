"""A multirun ends with a comparison of its jobs: console table, multirun.csv, multirun.html."""

from __future__ import annotations

import csv
import shutil

from kerasdiag.report.sweep import selected_job, summarize_sweep, sweep_table

from conftest import run_train


def test_a_two_job_multirun_ends_with_a_table_csv_and_page(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train(
        "-m", "optimizer.lr=0.01,0.0001", "trainer.epochs=2", "sanity=off", "monitors=off",
        f"hydra.sweep.dir={sweep}", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    table = out[out.index("job  overrides") :]
    assert "optimizer.lr=0.01 " in table and "optimizer.lr=0.0001 " in table
    assert str(sweep / "0") in table and str(sweep / "1") in table
    with (sweep / "multirun.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert rows[0]["overrides"].startswith("optimizer.lr=0.01")
    for row, job in zip(rows, ("0", "1"), strict=True):
        import json

        test = json.loads((sweep / job / "test_metrics.json").read_text())
        assert float(row["test_accuracy"]) == test["accuracy"]
        assert float(row["best_val"]) == test["monitor_value"]
        assert row["diagnosis"]  # a headline: the first finding, or "no symptoms found"
    # lr 0.01 learns the digits in 2 epochs, lr 1e-4 barely starts: the table ranks them
    assert float(rows[0]["test_accuracy"]) > float(rows[1]["test_accuracy"])
    page = (sweep / "multirun.html").read_text()
    assert '<tr class="best">' in page and 'href="0/report.html"' in page

    # a job that did not finish is listed as such, not dropped
    shutil.copytree(sweep / "1", sweep / "2")
    (sweep / "2" / "test_metrics.json").unlink()
    text = summarize_sweep(sweep)
    assert "unfinished" in text.splitlines()[4]


def test_a_sweep_over_models_stays_in_one_folder_and_each_run_is_titled_by_its_model(tmp_path):
    done = run_train(
        "-m", "model=mlp,convnet", "model.conv_filters=[4]", "model.dense_units=[8]",
        "trainer.epochs=1", "sanity=off", "monitors=off", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep,) = (tmp_path / "multirun" / "digits_softmax").iterdir()
    with (sweep / "multirun.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["overrides"].split()[0] for r in rows] == ["model=mlp", "model=convnet"]
    assert "model convnet)" in (sweep / "1" / "report.html").read_text()


def test_the_sweep_selects_on_validation_never_on_test():
    def row(job, best_val, test_accuracy, monitor="val_accuracy"):
        return {"job": job, "overrides": f"job={job}", "monitor": monitor, "best_val": best_val,
                "test_accuracy": test_accuracy, "test_loss": 0.5, "diagnosis": "-",
                "run_dir": f"sweep/{job}"}  # fmt: skip

    # job 1 has the best test accuracy, job 0 the best validation score: job 0 is selected
    rows = [row("0", 0.95, 0.90), row("1", 0.93, 0.94), row("2", float("nan"), 0.99)]
    assert selected_job(rows) == 0
    table = sweep_table(rows).splitlines()
    assert table[2].split()[2] == "0.9500" and table[2].split()[3] == "*"
    assert "*" not in table[3] and table[-1].startswith("* best val_accuracy: the job selected")
    # a loss is selected by its minimum; a tie goes to the first job
    losses = [row("0", 0.30, 0.9, "val_loss"), row("1", 0.20, 0.8, "val_loss"),
              row("2", 0.20, 0.7, "val_loss")]  # fmt: skip
    assert selected_job(losses) == 1
    assert selected_job([row("0", float("nan"), 0.9)]) is None
