"""A run killed at any recorded step, then the same command run again, ends with the files
of the run that was never interrupted.

One uninterrupted reference run (module-scoped), then for each step boundary a run that
SIGKILLs itself there (``KERASDIAG_KILL_AT``, :mod:`kerasdiag.core.faults`) and the same
command again, to completion; and one run killed in the middle of every step in turn, each
time by the same command (between two sanity stages, in an epoch before any backup, in an
epoch's end before its backup, in an epoch after a backup, in the test, in the diagnosis,
in the report), then finished. Every file is compared with the reference's:

- byte for byte, except
- the fields that hold seconds or dates (the normaliser :func:`normalised`): ``seconds`` of
  each ``sanity.json`` stage and of ``gradcheck.json``; ``probe_seconds`` and
  ``train_seconds`` of ``doctor.json``; in ``report.html`` the run directory's path, the
  ISO date, the sanity table's seconds cells, the gradient check's "N s)" and the doctor's "took X s of Y s" note;
  ``hydra.yaml``'s and ``train.log``'s lines are Hydra's and the console's (not compared);
- ``.keras`` files (zip archives) member by member: the weights byte for byte, the
  ``date_saved`` of ``metadata.json`` and the ``shared_object_id`` of ``config.json``
  (a memory address) left out;
- TensorBoard event files (their names hold the time and the process id, and a resumed run
  writes a new file beside the old one) record by record: the value of each tag at each
  step, the last record of a step where several files hold it (what the report's reader
  takes: a resume records again the steps after its backup), see ``_tensorboard``;
- PNGs byte for byte (matplotlib writes no date into them): the curves of a resumed run
  show every epoch, the ones before the kill included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

ARGS = ["trainer.epochs=3", "data.limit=400", "trainer.deterministic=true"]

# step:16 is mid-epoch 2 (11 steps an epoch); epoch:2 the boundary after two epochs.
KILL_POINTS = ["sanity", "step:16", "epoch:2", "fit", "test", "diagnosis", "report"]
# In the middle of each step, one after the other in one run directory (kerasdiag.core.faults
# says where each is): between sanity stages 2 and 3; in epoch 1 (no backup yet); in epoch
# 2's end (its rows, TensorBoard events and doctor record written, its backup not); in epoch
# 2 again (resumed after epoch 1); in epoch 3's end (doctor.json then counts a repeat of a
# finding of epoch 2 that the backup of epoch 2 does not hold); between the test's two
# files; before diagnosis.json; after the report's third section.
MID_STEP_KILLS = [
    "sanity-stage:2", "step:5", "backup:2", "step:16", "backup:3",
    "test-scored", "diagnosis-judged", "report-section:3",
]  # fmt: skip

# Not the run's record: Hydra's own files and the console log.
# timings.jsonl: seconds per stage, a line per process that worked on the run (timings).
NOT_COMPARED = {".hydra/hydra.yaml", "train.log", "timings.jsonl"}
# Keras' TensorBoard callback's runs; the monitors' own runs are the other folders.
KERAS_TENSORBOARD = {"train", "validation"}


def _train(
    run_dir: Path, kill_at: str | None = None, args: list[str] = ARGS, signal_name: str = ""
) -> subprocess.CompletedProcess:
    """The run's command in ``run_dir``; ``kill_at``: the kill point (``KERASDIAG_KILL_AT``),
    reached with SIGKILL or ``signal_name`` (``KERASDIAG_KILL_WITH``)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    env.pop("KERASDIAG_KILL_AT", None)
    env.pop("KERASDIAG_KILL_WITH", None)
    if kill_at is not None:
        env["KERASDIAG_KILL_AT"] = kill_at
        if signal_name:
            env["KERASDIAG_KILL_WITH"] = signal_name
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("kill_points") / "reference"
    proc = _train(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _files(run_dir: Path) -> set[str]:
    return {
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob("*")
        if p.is_file() and "tensorboard" not in p.relative_to(run_dir).parts
    }


def _json_without(text: str, timing: set[str]) -> object:
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: ("<seconds>" if k in timing else strip(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))


def normalised(run_dir: Path, name: str) -> object:
    """The content of ``name`` with the fields that hold seconds or dates replaced."""
    path = run_dir / name
    if name in ("sanity.json", "gradcheck.json"):
        return _json_without(path.read_text(), {"seconds"})
    if name == "doctor.json":
        return _json_without(path.read_text(), {"probe_seconds", "train_seconds"})
    if name == "report.html":
        html = path.read_text().replace(str(run_dir), "<run_dir>")
        html = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "<date>", html)
        html = re.sub(r"took [\d.]+ s of [\d.]+ s of training \([\d.]+%\)", "took <s>", html)
        html = re.sub(r", [\d.]+ s\)", ", <s>)", html)  # the gradient check's time
        # the files table's sizes: train.log's and the timed JSONs' vary (the files
        # themselves are compared here one by one)
        html = re.sub(r"<td>[\d.]+ (B|KB|MB)</td>", "<td><size></td>", html)
        # where the time went: seconds, and a resumed run's stages summed over its processes
        html = re.sub(r'<section id="time">.*?</section>', "<time section>", html, flags=re.S)
        sanity = run_dir / "sanity.json"
        for stage in json.loads(sanity.read_text()) if sanity.is_file() else []:
            html = html.replace(f"<td>{stage.get('seconds')}</td>", "<td><seconds></td>")
        return html
    if name.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            members = {n: archive.read(n) for n in archive.namelist()}
        meta = json.loads(members.pop("metadata.json"))
        meta.pop("date_saved", None)
        config = re.sub(rb'"shared_object_id": \d+', b"", members.pop("config.json"))
        return meta, config, members
    return path.read_bytes()


def _tensorboard(run_dir: Path, folders: set[str] | None = None) -> dict[tuple, object]:
    """{(folder, tag, step): value} of the run's TensorBoard logs (of ``folders`` only, when
    given): every record of every event file, in the files' order (their names start with
    the time they were opened), the last one of a step kept."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out: dict[tuple, object] = {}
    for folder in sorted((run_dir / "tensorboard").iterdir()):
        if folders is not None and folder.name not in folders:
            continue
        for events in sorted(folder.glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(events)).Load():
                for value in event.summary.value:
                    record = tensor_util.make_ndarray(value.tensor)
                    data = record.tolist() if record.dtype != object else record[-1]
                    out[folder.name, value.tag, event.step] = data
    return out


def _tags(records: dict[tuple, object]) -> dict[str, set[str]]:
    """{folder: the tags it holds} of :func:`_tensorboard`'s records."""
    out: dict[str, set[str]] = {}
    for folder, tag, _ in records:
        out.setdefault(folder, set()).add(tag)
    return out


def _differing(run_dir: Path, reference: Path) -> list[str]:
    """The files of ``run_dir`` whose content differs from the reference's (timings aside);
    first, the two runs must hold the same files (no backup, no .tmp leftovers)."""
    names = _files(reference) - NOT_COMPARED
    assert _files(run_dir) - NOT_COMPARED == names
    return [n for n in sorted(names) if normalised(run_dir, n) != normalised(reference, n)]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_run_killed_anywhere_finishes_with_the_uninterrupted_runs_files(
    tmp_path, reference, kill_at
):
    run_dir = tmp_path / "run"
    killed = _train(run_dir, kill_at)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert not (run_dir / ".kerasdiag.complete").exists()

    rerun = _train(run_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    if kill_at in ("test", "diagnosis", "report"):
        assert "Epoch " not in rerun.stdout and "RunBackup" not in rerun.stdout  # no training
    assert not _differing(run_dir, reference)
    # Keras' own runs: every epoch's record, each step once (the last record kept)
    assert _tensorboard(run_dir, KERAS_TENSORBOARD) == _tensorboard(reference, KERAS_TENSORBOARD)
    assert _tags(_tensorboard(run_dir)) == _tags(_tensorboard(reference))

    if kill_at == "report":  # a finished run is the one thing refused (checked once)
        again = _train(run_dir)
        assert again.returncode == 2 and "already holds a finished run" in again.stderr


@pytest.fixture(scope="module")
def killed_mid_step(tmp_path_factory) -> Path:
    """A run killed in the middle of every step in turn (``MID_STEP_KILLS``), then finished."""
    from kerasdiag.core import faults

    # a misspelt point would never fire
    assert {k.partition(":")[0] for k in MID_STEP_KILLS + KILL_POINTS} <= set(faults.KILL_POINTS)
    run_dir = tmp_path_factory.mktemp("mid_step") / "run"
    for kill_at in MID_STEP_KILLS:
        killed = _train(run_dir, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
        assert not (run_dir / ".kerasdiag.complete").exists()
        if kill_at == "backup:3":  # the case the doctor's carried record is for
            assert _repeats(json.loads((run_dir / "doctor.json").read_text())) != _repeats(
                _carried_doctor_record(run_dir)
            )
    rerun = _train(run_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Epoch " not in rerun.stdout  # the report was all that was left
    return run_dir


def _repeats(record: dict) -> dict[tuple, int]:
    """{(symptom, layer): times seen} of a doctor record."""
    return {(f["symptom"], f["layer"]): f["count"] for f in record["findings"]}


def _carried_doctor_record(run_dir: Path) -> dict:
    """The doctor's record as the backup holds it (at its epoch end)."""
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    return next(c["state"] for c in state["callbacks"] if c["class"] == "TrainingDoctor")


def test_a_run_killed_in_the_middle_of_every_step_finishes_with_the_uninterrupted_runs_files(
    killed_mid_step, reference
):
    """Every file equal, the curves of every epoch, the doctor's repeat counts (doctor.json)
    counted once though epoch 2's records were written before the kill and again after it."""
    assert not _differing(killed_mid_step, reference)
    # Keras' TensorBoard runs: epoch 2, recorded before its backup and again by the resume,
    # is read once, and the epochs before each kill are all there.
    keras_runs = _tensorboard(killed_mid_step, KERAS_TENSORBOARD)
    assert keras_runs == _tensorboard(reference, KERAS_TENSORBOARD)
    # The monitors' runs too: their events of each backed-up epoch were on disk before
    # its backup (the learning-rate run's epoch 1, written before a kill in epoch 2).
    assert _tensorboard(killed_mid_step) == _tensorboard(reference)
