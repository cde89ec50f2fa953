"""The run directory's bookkeeping, pure (no TensorFlow): which runs may start where.

Fast on purpose: ``scripts/mutation_test.py`` runs these against every mutant of
``kerasdiag/core/rundir.py``. Configs are plain OmegaConf trees shaped like the composed one.
"""

from __future__ import annotations

import fcntl

import numpy as np
import pytest
from omegaconf import OmegaConf

from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.rundir import (
    RunFiles,
    RunLayout,
    check_run_dir,
    claim_run_dir,
    config_difference,
    is_locked,
    read_metrics_csv,
    run_dir_status,
)


def _cfg(**trainer):
    return OmegaConf.create(
        {
            "trainer": {"epochs": 3, "resume": True, "verbose": 1, **trainer},
            "optimizer": {"name": "adam", "lr": 0.001},
            "monitors": {"activations": True},
            "tuner": {"workers": 1, "max_trials": 4},
        }
    )


def _interrupted(run_dir, cfg):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    OmegaConf.save(cfg, run_dir / "config.yaml")
    return run_dir


def test_status_ignores_hydras_files_and_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    assert run_dir_status(run_dir) == "new"  # not there yet
    run_dir.mkdir()
    assert run_dir_status(run_dir) == "new"
    for name in (".hydra", "train.log", RunLayout.LOCK):
        (run_dir / name).write_text("")
        assert run_dir_status(run_dir) == "new", name
    (run_dir / "metrics.csv").write_text("")
    assert run_dir_status(run_dir) == "unfinished"


def test_a_finished_run_is_never_written_into_again(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    (run_dir / RunLayout.COMPLETE).write_text("")
    assert run_dir_status(run_dir) == "finished"
    with pytest.raises(KerasdiagError) as info:
        check_run_dir(run_dir, _cfg())
    assert str(info.value) == (
        f"run directory {run_dir} already holds a finished run (report.html and "
        f"{RunLayout.COMPLETE} written); start a new run in a new directory (leave "
        "hydra.run.dir unset)"
    )


@pytest.mark.parametrize(
    "record", ["test_metrics.json", "nan.json", "diagnosis.json", "report.html"]
)
def test_a_run_killed_before_its_completion_marker_is_resumed(tmp_path, record):
    # Tested and perhaps diagnosed, but killed before the marker written after report.html:
    # the same command finishes it (diagnosis, report) without training again.
    run_dir = _interrupted(tmp_path / "run", _cfg())
    (run_dir / record).write_text("{}")
    assert run_dir_status(run_dir) == "unfinished"
    assert check_run_dir(run_dir, _cfg()) == "unfinished"


def test_an_interrupted_run_resumes_only_when_asked(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    assert check_run_dir(run_dir, _cfg()) == "unfinished"
    with pytest.raises(KerasdiagError) as info:
        check_run_dir(run_dir, _cfg(resume=False))
    assert str(info.value) == (
        f"run directory {run_dir} holds an interrupted run; resume it with "
        "trainer.resume=true or start a new run in a new directory"
    )
    assert check_run_dir(tmp_path / "fresh", _cfg(resume=False)) == "new"


def test_a_resume_with_another_config_names_the_first_difference(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    changed = _cfg()
    changed.optimizer.lr = 0.01
    changed.trainer.epochs = 5
    with pytest.raises(KerasdiagError) as info:
        check_run_dir(run_dir, changed)
    # keys in sorted order: optimizer.lr comes before trainer.epochs
    assert str(info.value) == (
        f"cannot resume the run in {run_dir}: its optimizer.lr was 0.001, now 0.01; a resumed "
        "run must use the interrupted run's config (start a new run in a new directory instead)"
    )


def test_what_is_shown_may_change_on_resume_what_is_trained_may_not(tmp_path):
    saved = _cfg()
    path = _interrupted(tmp_path / "run", saved) / "config.yaml"
    shown = _cfg(verbose=0)
    shown.monitors.activations = False  # a whole free group, nested key
    shown.tuner.workers = 4  # a free key inside a group that is otherwise compared
    assert config_difference(path, shown) is None
    trained = _cfg()
    trained.tuner.max_trials = 8
    assert config_difference(path, trained) == "its tuner.max_trials was 4, now 8"
    # a key that merely starts with a free key's name is compared
    prefixed = _cfg(verbose_extra=1)
    assert config_difference(path, prefixed) == "its trainer.verbose_extra was None, now 1"


def test_added_and_removed_keys_count_as_differences(tmp_path):
    path = _interrupted(tmp_path / "run", _cfg()) / "config.yaml"
    fewer = _cfg()
    del fewer.optimizer["lr"]
    assert config_difference(path, fewer) == "its optimizer.lr was 0.001, now None"


def test_a_missing_or_unreadable_saved_config(tmp_path):
    assert config_difference(tmp_path / "absent.yaml", _cfg()) is None
    broken = tmp_path / "config.yaml"
    broken.write_text("trainer: [unclosed\n")
    difference = config_difference(broken, _cfg())
    assert difference == "its config.yaml is unreadable (ParserError)"


def test_claim_locks_checks_and_cleans_up(tmp_path):
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir, _cfg()) as status:
        assert status == "new"
        assert (run_dir / RunLayout.LOCK).exists()
        assert is_locked(run_dir)  # flock: another open of the file is refused, same process too
        with pytest.raises(KerasdiagError, match="is in use by another kerasdiag process"):
            with claim_run_dir(run_dir, _cfg()):
                pass
        assert (run_dir / RunLayout.LOCK).exists()  # the refused claim left the holder's lock
    assert not (run_dir / RunLayout.LOCK).exists()
    assert not is_locked(run_dir)


def test_a_claim_that_fails_its_check_releases_the_lock(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    with pytest.raises(KerasdiagError, match="interrupted run"):
        with claim_run_dir(run_dir, _cfg(resume=False)):
            pass
    assert not (run_dir / RunLayout.LOCK).exists()
    with open(run_dir / RunLayout.LOCK, "a+") as handle:  # nobody holds it any more
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_is_locked_leaves_a_free_lock_free(tmp_path):
    (tmp_path / RunLayout.LOCK).write_text("")
    assert not is_locked(tmp_path)
    assert not is_locked(tmp_path)  # checking did not keep the lock
    with open(tmp_path / RunLayout.LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path / "nowhere")


def test_interpolations_compare_by_their_values(tmp_path):
    """config.yaml keeps ``${...}`` as written: both sides are compared resolved."""
    cfg = _cfg()
    cfg.trainer.monitor = "${optimizer.name}"
    path = _interrupted(tmp_path / "run", cfg) / "config.yaml"
    assert "${optimizer.name}" in path.read_text()
    assert config_difference(path, cfg) is None
    same_value = _cfg(monitor="adam")  # written out, not interpolated: the same run
    assert config_difference(path, same_value) is None


def test_a_section_replaced_by_a_value_and_keys_of_mixed_types(tmp_path):
    saved = _cfg()
    saved.optimizer = OmegaConf.create({1: "a", "b": 2})  # YAML allows integer keys
    path = _interrupted(tmp_path / "run", saved) / "config.yaml"
    flat = _cfg()
    flat.optimizer = "sgd"
    assert config_difference(path, flat) == "its optimizer was {1: 'a', 'b': 2}, now 'sgd'"
    mixed = _cfg()
    mixed.optimizer = OmegaConf.create({1: "a", "b": 3})
    assert config_difference(path, mixed) == "its optimizer.b was 2, now 3"


def test_metrics_csv_keeps_one_row_per_epoch_the_last_written(tmp_path):
    """A crash between a row and the backup repeats an epoch on resume: the reader keeps the
    row written last, so epochs read 1, 2, 3 once each."""
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,val_loss\n1,2.0,2.1\n2,1.5,\n2,1.4,1.6\n3,1.0,1.2\n")
    rows = read_metrics_csv(path)
    assert list(rows) == [1, 2, 3]
    assert rows[2] == {"epoch": 2, "loss": 1.4, "val_loss": 1.6}
    assert isinstance(rows[2]["epoch"], int) and isinstance(rows[2]["loss"], float)
    assert rows[1]["val_loss"] == 2.1


def test_run_files_read_what_is_there_and_empty_for_what_is_not(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"run directory {tmp_path / 'nowhere'} does not"):
        RunFiles(tmp_path / "nowhere")
    run = RunFiles(tmp_path)
    assert run.path == tmp_path
    assert run.history() == {} and run.config() is None and run.json("x.json") is None
    assert run.csv_rows("a.csv") == [] and run.sanity_initial_loss() is None
    assert not run.exists("metrics.csv")
    (tmp_path / "metrics.csv").write_text("epoch,loss,val_loss\n2,1.5,\n1,2.0,2.5\n")
    assert run.exists("metrics.csv") and not run.exists("")
    history = run.history()
    assert history["epoch"] == [1.0, 2.0] and history["loss"] == [2.0, 1.5]  # epoch order
    assert history["val_loss"][0] == 2.5 and np.isnan(history["val_loss"][1])
    assert list(history) == ["epoch", "loss", "val_loss"]  # columns sorted
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    assert run.csv_rows("t.csv") == [["1", "x"], ["2", "y"]]
    (tmp_path / "d.json").write_text('{"k": [1, 2]}')
    assert run.json("d.json") == {"k": [1, 2]}
    OmegaConf.save(OmegaConf.create({"a": 1, "b": "${a}"}), tmp_path / "config.yaml")
    assert run.config() == {"a": 1, "b": "${a}"}  # as written: a report shows what was set


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([{"name": "gradcheck", "value": 1e-9}, {"name": "initial_loss", "value": 2.31}], 2.31),
        ([{"name": "initial_loss", "value": 2}], 2.0),
        ([{"name": "initial_loss", "value": None}], None),
        ([{"name": "initial_loss", "value": float("nan")}], None),
        ([{"name": "initial_loss", "value": "2.3"}], None),
        ([{"name": "overfit", "value": 0.1}], None),
        ([], None),
    ],
)
def test_the_initial_loss_the_sanity_stage_measured(tmp_path, stages, expected):
    import json

    (tmp_path / "sanity.json").write_text(json.dumps(stages))
    value = RunFiles(tmp_path).sanity_initial_loss()
    assert value == expected and (value is None or isinstance(value, float))
