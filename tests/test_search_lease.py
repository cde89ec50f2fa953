"""The lease rules of ``LeasedRandomSearchOracle``, on the oracle itself: who holds
which trial, what happens when a worker goes silent, when a chief reloads, when a late result
arrives. The processes around it are tested in test_search_faults.py."""

from __future__ import annotations

import time

import keras_tuner
import pytest

from kerasdiag.search.distributed import IDLE, RUNNING, STOPPED, LeasedRandomSearchOracle


def make_oracle(directory, lease: float = 0.3, trials: int = 3) -> LeasedRandomSearchOracle:
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    oracle = LeasedRandomSearchOracle(
        lease_seconds=lease, objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=trials, hyperparameters=hp, seed=1,
    )  # fmt: skip
    oracle._set_project_dir(str(directory), "stage1")
    return oracle


def complete(oracle, tuner_id: str, trial, score: float = 0.5) -> bool:
    assert oracle.report(tuner_id, trial.trial_id, {"val_accuracy": score}, 0)
    trial.status = "COMPLETED"
    return oracle.finish(tuner_id, trial)


def test_a_silent_workers_trial_goes_to_the_next_worker_and_is_recorded_once(tmp_path, capsys):
    oracle = make_oracle(tmp_path)
    first = oracle.create_trial("w0")
    second = oracle.create_trial("w1")
    assert first.status == second.status == RUNNING and first.trial_id != second.trial_id
    time.sleep(0.4)
    assert oracle.heartbeat("w1", second.trial_id)  # w1 is alive; w0 went silent
    assert oracle.expire_leases() == [first.trial_id]
    assert "lost its worker w0" in capsys.readouterr().out
    assert oracle.create_trial("w1").trial_id == second.trial_id  # still its own
    assert complete(oracle, "w1", second)
    taken_over = oracle.create_trial("w1")
    assert taken_over.trial_id == first.trial_id and taken_over.status == RUNNING
    # The lost worker's late result is dropped; the new holder's is recorded.
    assert not oracle.heartbeat("w0", first.trial_id)
    assert not oracle.finish("w0", first)
    assert complete(oracle, "w1", taken_over, 0.7)
    assert oracle.trials[first.trial_id].score == 0.7
    assert oracle.end_order.count(first.trial_id) == 1


def test_a_worker_with_nothing_to_do_waits_while_a_leased_trial_may_come_back(tmp_path):
    oracle = make_oracle(tmp_path, trials=1)
    trial = oracle.create_trial("w0")
    assert oracle.create_trial("w1").status == IDLE  # not STOPPED: w0 may still die
    assert not oracle.over()
    assert complete(oracle, "w0", trial)
    assert oracle.create_trial("w1").status == STOPPED
    assert oracle.over() and not oracle.done_serving()  # w0 has not been told to stop yet
    assert oracle.create_trial("w0").status == STOPPED
    assert oracle.done_serving()


def test_a_reloaded_chief_keeps_running_trials_with_their_workers(tmp_path):
    oracle = make_oracle(tmp_path, lease=30)
    running = oracle.create_trial("w0")
    done = oracle.create_trial("w1")
    assert complete(oracle, "w1", done)

    again = make_oracle(tmp_path, lease=30)  # the chief, restarted
    again.reload()
    assert again.ongoing_trials["w0"].trial_id == running.trial_id
    other = again.create_trial("w2")  # a new worker never gets the running trial
    assert other.trial_id not in (running.trial_id, done.trial_id)
    assert again.heartbeat("w0", running.trial_id)
    assert complete(again, "w0", again.ongoing_trials["w0"])
    assert again.end_order.count(running.trial_id) == 1


@pytest.mark.parametrize("lost", [1, 3])
def test_a_trial_that_loses_too_many_workers_fails(tmp_path, lost):
    oracle = make_oracle(tmp_path)
    for n in range(lost):
        trial = oracle.create_trial(f"w{n}")
        oracle.release(f"w{n}", "its process died")
    status = oracle.trials[trial.trial_id].status
    assert status == ("FAILED" if lost >= oracle.max_lost else RUNNING)
