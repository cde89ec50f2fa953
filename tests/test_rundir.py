"""The run directory's bookkeeping, pure (no TensorFlow): which runs may start where.

Fast on purpose: ``scripts/mutation_test.py`` runs these against every mutant of
``kerasdiag/rundir.py``. Configs are plain OmegaConf trees shaped like the composed one.
"""

from __future__ import annotations

import fcntl

import pytest
from omegaconf import OmegaConf

from kerasdiag.errors import KerasdiagError
from kerasdiag.rundir import (
    LOCK_FILE,
    check_run_dir,
    claim_run_dir,
    config_difference,
    is_locked,
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
    for name in (".hydra", "train.log", LOCK_FILE):
        (run_dir / name).write_text("")
        assert run_dir_status(run_dir) == "new", name
    (run_dir / "metrics.csv").write_text("")
    assert run_dir_status(run_dir) == "unfinished"


@pytest.mark.parametrize("marker", ["test_metrics.json", "nan.json"])
def test_a_finished_run_is_never_written_into_again(tmp_path, marker):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    (run_dir / marker).write_text("{}")
    assert run_dir_status(run_dir) == "finished"
    with pytest.raises(KerasdiagError, match=rf"already holds a finished run \({marker}\)"):
        check_run_dir(run_dir, _cfg())


def test_an_interrupted_run_resumes_only_when_asked(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    assert check_run_dir(run_dir, _cfg()) == "unfinished"
    with pytest.raises(KerasdiagError, match="holds an interrupted run; resume it"):
        check_run_dir(run_dir, _cfg(resume=False))
    assert check_run_dir(tmp_path / "fresh", _cfg(resume=False)) == "new"


def test_a_resume_with_another_config_names_the_first_difference(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    changed = _cfg()
    changed.optimizer.lr = 0.01
    changed.trainer.epochs = 5
    with pytest.raises(KerasdiagError) as info:
        check_run_dir(run_dir, changed)
    # keys in sorted order: optimizer.lr comes before trainer.epochs
    assert "its optimizer.lr was 0.001, now 0.01" in str(info.value)
    assert "\n" not in str(info.value)


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
    assert difference is not None and difference.startswith("its config.yaml is unreadable (")


def test_claim_locks_checks_and_cleans_up(tmp_path):
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir, _cfg()) as status:
        assert status == "new"
        assert (run_dir / LOCK_FILE).exists()
        assert is_locked(run_dir)  # flock: another open of the file is refused, same process too
        with pytest.raises(KerasdiagError, match="is in use by another kerasdiag process"):
            with claim_run_dir(run_dir, _cfg()):
                pass
        assert (run_dir / LOCK_FILE).exists()  # the refused claim left the holder's lock
    assert not (run_dir / LOCK_FILE).exists()
    assert not is_locked(run_dir)


def test_a_claim_that_fails_its_check_releases_the_lock(tmp_path):
    run_dir = _interrupted(tmp_path / "run", _cfg())
    with pytest.raises(KerasdiagError, match="interrupted run"):
        with claim_run_dir(run_dir, _cfg(resume=False)):
            pass
    assert not (run_dir / LOCK_FILE).exists()
    with open(run_dir / LOCK_FILE, "a+") as handle:  # nobody holds it any more
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_is_locked_leaves_a_free_lock_free(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")
    assert not is_locked(tmp_path)
    assert not is_locked(tmp_path)  # checking did not keep the lock
    with open(tmp_path / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path / "nowhere")
