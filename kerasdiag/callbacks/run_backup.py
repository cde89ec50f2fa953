"""``RunBackup``: continue an interrupted ``fit`` from its last completed epoch.

Keras' ``BackupAndRestore`` overwrites its weights file in place and writes the epoch number
in a second file, so a process killed while saving can leave a truncated file or a weights
file and an epoch number that disagree; and callbacks such as ``EarlyStopping`` start over.
``RunBackup`` keeps the same idea (the model's and optimizer's variables saved every epoch,
``model._initial_epoch`` set on restore) with three differences that matter for a run
directory that must survive ``kill -9``:

- atomic: each epoch writes a new weights file under a temporary name, renames it, then
  replaces ``state.json`` (atomically) to point at it, then deletes the previous one;
- the state of other callbacks travels with it (``track=[...]``): EarlyStopping's wait, best
  and best weights, ReduceLROnPlateau's wait, cooldown and best; and the whole record of a
  callback that keeps one (``backup_state()`` / ``restore_state(state)``, e.g. the curve
  plotter's epochs and step losses, the doctor's findings with their repeat counts), taken at
  the very step of the backup, so a resumed run neither loses what was recorded before it nor
  counts again what was recorded after it (numpy arrays in such a record go to ``.npy``
  files beside ``state.json``, named by their content and written once: a record that
  grows with the run is not rewritten whole at every epoch);
- a fit that already ended (all epochs, or stopped early) is not trained again;
- verified: every file of the backup, ``state.json`` included, is listed with its SHA-256 in
  ``manifest.json`` and checked before a resume, so anything changed since (weights
  overwritten inside a valid HDF5 file, a truncated ``.npz``, an epoch number edited by hand,
  a missing file) is refused in one line instead of resuming a different run;
- by step: :meth:`RunBackup.save_step` backs up in the middle of an epoch (what
  :class:`~kerasdiag.callbacks.interrupt.StopOnSignal` does on SIGTERM); the resumed ``fit``
  replays the epoch's first steps without training (it draws their batches, so the data
  stream stays where it was, and counts the optimizer's steps) and trains from the step after,
  with the epoch's running metrics as they were: the epoch ends as the uninterrupted one did.

The manifest (``{"format": 2, "current": GEN, "previous": GEN | null}``, a generation ``GEN``
being ``{"state": SHA, "files": {name: SHA}}``) is written after the data files and before
``state.json`` is renamed into place: a process killed between the two renames leaves the
previous ``state.json``, which ``previous`` still vouches for (its files are deleted only
once the new ``state.json`` is in place). Once it is, the manifest is written again without
``previous`` (and ``"committed": true``): from then on only the new state passes. ``state.json``'s digest is taken over its whole
parsed content, the ``finished`` flag set at train end included (that commit writes a new
manifest too): no field can be edited by hand.

The optimizer's variables are part of the weights file (``.variables.npz``: every variable of
the model and of its optimizer, in order), so moments, the iteration count (hence
the position of a per-step learning-rate schedule) and a plateau-reduced learning rate all
resume where they were; the layers' random streams (Keras' SeedGenerator states, which
``save_weights`` leaves out: dropout masks) travel in ``state.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import keras
import numpy as np

from kerasdiag.callbacks.base import flush_records
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import (
    atomic_path,
    remove_stale_temporaries,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from kerasdiag.core.rundir import RunLayout

# Counters and best values of keras' EarlyStopping and ReduceLROnPlateau (and any callback
# that keeps its progress in attributes of these names).
TRACKED_ATTRS = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # 2: the digest covers state.json whole (1 left the finished flag out)
# In a callback's saved state: {ARRAY_KEY: "array-<sha>.npy"} stands for a numpy array.
ARRAY_KEY = "backup_array"


class RunBackup(keras.callbacks.Callback):
    """Back up the training state at every epoch end; restore it when ``fit`` starts again.

    Args:
        backup_dir: folder of the backup (created when needed; used by nothing else).
        track: callbacks whose progress (see ``TRACKED_ATTRS``, and EarlyStopping's best
            weights) is saved and restored with the model.
        delete_on_train_end: remove the backup when ``fit`` returns. kerasdiag's pipeline
            passes False and removes it once the whole run (test evaluation too) is written,
            so a run killed after ``fit`` is not trained again.

    Example:
        >>> es = keras.callbacks.EarlyStopping(patience=3)
        >>> model.fit(x, y, validation_split=0.1, epochs=20,
        ...           callbacks=[es, RunBackup("run/backup", track=[es])])  # doctest: +SKIP
        >>> # killed at epoch 7; the same call again runs epochs 8..20 (or stops early as planned)
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        track: list[keras.callbacks.Callback] | tuple = (),
        delete_on_train_end: bool = True,
    ):
        super().__init__()
        if not str(backup_dir):
            raise ValueError("`backup_dir` must be a folder path. Received: backup_dir=''")
        self.backup_dir = Path(backup_dir)
        self.track = list(track)
        for cb in self.track:
            if not isinstance(cb, keras.callbacks.Callback):
                raise ValueError(f"`track` must hold Keras callbacks. Received: {cb!r}")
        self.delete_on_train_end = bool(delete_on_train_end)
        self.restored_epoch: int | None = None  # epochs already done when fit started
        self.restored_step: int = 0  # steps of the next epoch done when fit started
        self._pending_states: list[dict[str, Any]] | None = None
        self._pending_metrics: list | None = None
        self._final_weights: list[np.ndarray] | None = None
        self._replay = 0  # steps of the resumed epoch still to draw without training
        self._train_function: Callable | None = None

    # -- restore ------------------------------------------------------------------------------

    def resume_epoch(self) -> int:
        """Completed epochs the backup holds (0 without a valid one): where the training data
        stream starts. A backup taken mid-epoch starts it at that epoch's beginning; ``fit``
        then replays the steps already trained (see the module docstring)."""
        try:
            state = verified_backup_state(self.backup_dir)
        except KerasdiagError:
            return 0  # refused in on_train_begin, before anything trains
        return 0 if state is None else int(state["epoch"])

    def on_train_begin(self, logs=None):
        self.restored_epoch, self.restored_step = None, 0
        self._pending_states = self._pending_metrics = self._final_weights = None
        self._end_replay()  # a fit that left in the middle of a replay: its own function back
        state = verified_backup_state(self.backup_dir)
        if state is None:
            return
        model = self.model
        weights = self.backup_dir / state["weights"]
        try:
            _load_variables(model, weights)
        except Exception as exc:
            raise KerasdiagError(
                f"cannot resume from backup {weights}: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}; delete {self.backup_dir} to start this "
                "run over"
            ) from None
        _set_rng_states(model, state.get("rng"))
        states = state.get("callbacks", [])
        for cb, saved in self._tracked(states):
            if "state" in saved and hasattr(cb, "restore_state"):
                # now, before any epoch or train end: the callback continues its record
                cb.restore_state(_load_state_arrays(saved["state"], self.backup_dir))
        epochs = int(self.params.get("epochs", 0) or 0)
        step = int(state.get("step") or 0)
        finished = (
            bool(state.get("finished"))
            or (epochs and state["epoch"] >= epochs)
            or any((s.get("attrs") or {}).get("stopped_epoch") for s in states)
        )
        self.restored_epoch = int(state["epoch"])
        if finished:
            # Training is over: no epoch runs, and the weights EarlyStopping would have
            # restored are put back at train end (after the optimizer's EMA finalisation,
            # as in the uninterrupted fit).
            model._initial_epoch = max(epochs, self.restored_epoch)
            self._final_weights = self._best_weights_to_restore(states)
            print(f"RunBackup: training had finished ({self.restored_epoch} epochs); not repeated")
            return
        model._initial_epoch = self.restored_epoch
        # Applied at the first epoch begin, after every callback's on_train_begin reset.
        self._pending_states = states
        if step:
            self._start_replay(step, state.get("metrics"))
            print(
                f"RunBackup: resuming in epoch {self.restored_epoch + 1} after step {step} "
                f"from {self.backup_dir}"
            )
        else:
            print(f"RunBackup: resuming after epoch {self.restored_epoch} from {self.backup_dir}")

    def _start_replay(self, step: int, metrics: list | None) -> None:
        """Make the resumed epoch's first ``step`` steps draw their batches without training.

        The weights loaded hold the optimizer's step count at the interruption; it is set back
        to the epoch's start and counted up again by the replayed steps, so the callbacks that
        read it at the epoch's first batch (learning-rate record, monitors) see what the
        uninterrupted run showed them. The epoch's running metrics come back at its first
        replayed step.
        """
        model = self.model
        self.restored_step = self._replay = int(step)
        self._pending_metrics = metrics
        iterations = getattr(model.optimizer, "iterations", None)
        if iterations is not None:
            iterations.assign(int(np.asarray(iterations.numpy())) - self._replay)
        self._train_function = train_function = model.train_function
        per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))

        def replay_then_train(iterator: Any) -> Any:
            if self._replay <= 0:
                return train_function(iterator)
            for _ in range(per_call):
                batch = next(iterator)  # the batch the interrupted run trained on: skip it
            if self._pending_metrics is not None:
                self._restore_metrics(batch)
            if iterations is not None:
                iterations.assign_add(per_call)
            self._replay -= per_call
            if self._replay <= 0:
                self._end_replay()
            return model.get_metrics_result()

        model.train_function = replay_then_train

    def _end_replay(self) -> None:
        if self._train_function is not None:
            self.model.train_function = self._train_function
        self._train_function, self._replay = None, 0

    def _restore_metrics(self, batch: Any) -> None:
        """Put back the resumed epoch's running metric totals (fit reset them at its begin).

        The compiled metrics get their variables at the first training step, which has not
        run in this process: they are built here, symbolically, from the batch's shapes.
        """
        model, saved = self.model, self._pending_metrics or []
        self._pending_metrics = None
        if hasattr(model, "_symbolic_build"):
            model._symbolic_build(data_batch=batch)
        variables = _metric_variables(model)
        if len(variables) != len(saved):
            return  # another model or metric list: the epoch's metrics restart
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending_states is not None:
            for cb, saved in self._tracked(self._pending_states):
                for name, value in (saved.get("attrs") or {}).items():
                    setattr(cb, name, value)
                if saved.get("best_weights"):
                    cb.best_weights = _load_arrays(self.backup_dir / saved["best_weights"])
            self._pending_states = None

    def _tracked(self, states: list[dict[str, Any]]) -> list[tuple[Any, dict[str, Any]]]:
        """(callback, its saved state) for each tracked callback the backup has a state of;
        one of another class (the callback list changed) is left fresh."""
        pairs = zip(self.track, states, strict=False)
        return [(cb, saved) for cb, saved in pairs if saved.get("class") == type(cb).__name__]

    def carry(self, callbacks: Iterable[keras.callbacks.Callback]) -> None:
        """Also back up the record of every callback among ``callbacks`` that keeps one
        (``backup_state`` / ``restore_state``) and is not tracked yet. They must come before
        this RunBackup in ``fit``'s list: their epoch-end records are then complete when it
        backs up, and their train-begin resets done when it restores them."""
        for cb in callbacks:
            keeps = hasattr(cb, "backup_state") and hasattr(cb, "restore_state")
            if keeps and cb is not self and not any(cb is t for t in self.track):
                self.track.append(cb)

    def _best_weights_to_restore(self, states: list[dict[str, Any]]) -> list[np.ndarray] | None:
        for cb, saved in zip(self.track, states, strict=False):
            if getattr(cb, "restore_best_weights", False) and saved.get("best_weights"):
                return _load_arrays(self.backup_dir / saved["best_weights"])
        return None

    # -- back up ------------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)

    def save_step(self, epoch: int, step: int) -> bool:
        """Back up now, ``step`` steps into epoch ``epoch`` (from 0), e.g. on SIGTERM.

        Returns False, keeping the backup there is, while the resumed epoch still replays
        steps the backup already covers (the weights are those of a later step).
        """
        if self._replay > 0:
            return False
        self._save(int(epoch), int(step))
        return True

    def _save(self, epochs_done: int, step: int) -> None:
        # a test's fault injection (inert otherwise): the epoch's records written, its backup not
        kill_point("backup", epochs_done)
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        stem = f"epoch{epochs_done:04d}" + (f"-step{step:06d}" if step else "")
        weights = self.backup_dir / f"{stem}.variables.npz"
        checksums = {}
        with atomic_path(weights) as tmp:
            _save_variables(self.model, tmp)
            checksums[weights.name] = sha256_file(tmp)
        states = []
        for i, cb in enumerate(self.track):
            saved: dict[str, Any] = {"class": type(cb).__name__, "attrs": _attrs(cb)}
            if hasattr(cb, "backup_state"):
                saved["state"] = self._store_arrays(cb.backup_state(), checksums)
            best = getattr(cb, "best_weights", None)
            if best is not None:
                path = self.backup_dir / f"{stem}-callback{i}-best_weights.npz"
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, *[np.asarray(w) for w in best])
                    checksums[path.name] = sha256_file(tmp)
                saved["best_weights"] = path.name
            states.append(saved)
        state: dict[str, Any] = {
            "epoch": epochs_done, "step": step, "weights": weights.name, "callbacks": states,
            "rng": _rng_states(self.model), "checksums": checksums, "finished": False,
        }  # fmt: skip
        if step:
            state["metrics"] = [
                np.asarray(v.numpy()).tolist() for v in _metric_variables(self.model)
            ]
        # What the backup covers is on disk before it is committed (a step backup has no
        # WritesBarrier before it): the monitors' and the doctor's files and TensorBoard
        # events, those that taking their states above wrote last included (a measurement
        # pending at the step, which the state of a step monitor completes).
        flush_records()
        _commit(self.backup_dir, state)
        self._remove_unreferenced(keep=set(checksums))

    def _store_arrays(self, value: Any, checksums: dict[str, str]) -> Any:
        """``value`` (a callback's backup state) with each numpy array in it stored in its own
        ``.npy`` file beside ``state.json``, named by its content and listed in
        ``checksums``: ``{ARRAY_KEY: file name}`` in its place.

        A record that grows with the run (the curve plotter's step losses) would otherwise
        be rewritten whole into ``state.json`` at every epoch: megabytes of JSON per epoch
        in a long run. Its arrays of finished epochs do not change, so their files are
        written once and kept while a backup refers to them.
        """
        if isinstance(value, dict):
            return {k: self._store_arrays(v, checksums) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._store_arrays(v, checksums) for v in value]
        if not isinstance(value, np.ndarray):
            return value
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = self.backup_dir / f"array-{digest[:24]}.npy"
        if not path.is_file():  # else the same content, written by an earlier backup
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
        checksums[path.name] = digest
        return {ARRAY_KEY: path.name}

    def on_train_end(self, logs=None):
        self._end_replay()
        if self._final_weights is not None:
            self.model.set_weights(self._final_weights)
            self._final_weights = None
        if self.delete_on_train_end:
            remove_backup(self.backup_dir)
            return
        try:
            state = verified_backup_state(self.backup_dir)
        except KerasdiagError:
            state = None  # not this fit's backup: a resume refuses it, in one line
        if state is not None and not state.get("finished"):
            _commit(self.backup_dir, {**state, "finished": True})

    def _remove_unreferenced(self, keep: set) -> None:
        remove_stale_temporaries(self.backup_dir)
        fixed = {RunLayout.BACKUP_STATE, MANIFEST}
        for path in self.backup_dir.iterdir():
            if path.name not in fixed and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)


def read_backup_state(backup_dir: str | os.PathLike, strict: bool = True) -> dict | None:
    """The backup's ``state.json`` (epoch, weights file, callback states), or None if none.

    Not verified: :func:`verified_backup_state` is what a resume reads. With ``strict``, an
    unreadable state is a one-line KerasdiagError.
    """
    path = Path(backup_dir) / RunLayout.BACKUP_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("no epoch number")
        if not (Path(backup_dir) / str(state.get("weights"))).is_file():
            raise ValueError(f"its weights file {state.get('weights')!r} is missing")
    except (OSError, ValueError) as exc:
        if not strict:
            return None
        raise KerasdiagError(
            f"cannot resume from backup {path}: {exc}; delete {Path(backup_dir)} to start over"
        ) from None
    return state


def verified_backup_state(backup_dir: str | os.PathLike) -> dict | None:
    """The backup's state after checking every file it uses against ``manifest.json``.

    None when there is no backup (or the very first one was cut off before its
    ``state.json``). Anything that differs from the manifest (``state.json`` edited by hand,
    weights overwritten inside a valid HDF5 file, a truncated ``.npz``, a missing file or
    manifest) is a one-line KerasdiagError naming the file: resuming from it would not
    continue this run.
    """
    backup_dir = Path(backup_dir)
    state_path, manifest_path = backup_dir / RunLayout.BACKUP_STATE, backup_dir / MANIFEST
    if not manifest_path.is_file():
        if state_path.is_file():
            _refuse(manifest_path, "it is missing", backup_dir)
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        generations = [g for g in (manifest["current"], manifest.get("previous")) if g]
        for generation in generations:
            if not isinstance(generation.get("state"), str) or not isinstance(
                generation.get("files"), dict
            ):
                raise ValueError("malformed")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _refuse(manifest_path, f"unreadable: {type(exc).__name__}", backup_dir)
    if not state_path.is_file():
        if manifest.get("previous") is None and not manifest.get("committed"):
            return None  # the first backup was cut off before its state.json: none yet
        _refuse(state_path, "it is missing", backup_dir)
    try:
        state = json.loads(state_path.read_text())
        digest = _state_digest(state, manifest.get("format", 1))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        _refuse(state_path, f"unreadable: {type(exc).__name__}", backup_dir)
    generation = next((g for g in generations if g["state"] == digest), None)
    if generation is None:
        _refuse(state_path, f"it differs from {MANIFEST}: edited after it was written", backup_dir)
    files = generation["files"]
    for name, expected in files.items():
        path = backup_dir / str(name)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            _refuse(path, "it is missing", backup_dir)
        except OSError as exc:
            _refuse(path, f"unreadable ({exc.strerror or type(exc).__name__})", backup_dir)
        if actual != expected:
            _refuse(
                path, "its checksum does not match: it changed after it was written", backup_dir
            )
    used = [state.get("weights")] + [s.get("best_weights") for s in state.get("callbacks") or []]
    used += _array_files(state.get("callbacks"))
    for name in filter(None, used):
        if name not in files:
            _refuse(backup_dir / str(name), f"{MANIFEST} does not vouch for it", backup_dir)
    if not isinstance(state.get("epoch"), int):
        _refuse(state_path, "no epoch number", backup_dir)
    return state


def _refuse(path: Path, what: str, backup_dir: Path) -> NoReturn:
    raise KerasdiagError(
        f"backup file {path} is corrupt ({what}); resuming from it would not continue this "
        f"run. Delete {backup_dir} to train this run from the start, or start a new run in a "
        "new directory"
    )


def _commit(backup_dir: Path, state: dict[str, Any]) -> None:
    """Make ``state`` the backup's ``state.json``, vouched for by a new manifest generation
    (its data files, ``state["checksums"]``, are already written): the manifest first, then
    ``state.json``; a process killed between the two renames leaves the previous state, which
    the new manifest keeps as ``previous`` until ``state.json`` is in place."""
    text = json.dumps(state, indent=2) + "\n"
    current = {"state": _state_digest(json.loads(text)), "files": state["checksums"]}
    manifest = {"format": MANIFEST_FORMAT, "current": current}
    previous = _generation_in_place(backup_dir)
    write_json_atomic(backup_dir / MANIFEST, {**manifest, "previous": previous})
    write_text_atomic(backup_dir / RunLayout.BACKUP_STATE, text)
    # Committed: the previous state no longer counts (else a state.json edited back to
    # it, e.g. the finished flag cleared, would pass), and a missing state.json is refused.
    write_json_atomic(backup_dir / MANIFEST, {**manifest, "previous": None, "committed": True})


def _state_digest(state: dict, manifest_format: int = MANIFEST_FORMAT) -> str:
    """SHA-256 of ``state.json``'s whole content as parsed (every field, ``finished`` too).

    A format-1 manifest (written before the flag was covered) vouched for the content without
    ``finished``: such a backup still resumes, and its next commit is format 2."""
    if manifest_format == 1:
        state = {k: v for k, v in state.items() if k != "finished"}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _generation_in_place(backup_dir: Path) -> dict | None:
    """The manifest generation the ``state.json`` now in place matches (None if none): kept
    as ``previous`` while a new backup is being committed."""
    try:
        manifest = json.loads((backup_dir / MANIFEST).read_text())
        state = json.loads((backup_dir / RunLayout.BACKUP_STATE).read_text())
        digest = _state_digest(state, manifest.get("format", 1))
        generations = [manifest.get("current"), manifest.get("previous")]
        found = next((g for g in generations if g and g.get("state") == digest), None)
        # vouched for as the new manifest's format does (an older one digests differently)
        return None if found is None else {**found, "state": _state_digest(state)}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def remove_backup(backup_dir: str | os.PathLike) -> None:
    """Delete a backup folder (when its run has completed)."""
    shutil.rmtree(backup_dir, ignore_errors=True)


def _rng_variables(model: keras.Model) -> list[Any]:
    # Dropout's (and other layers') random streams: Keras' SeedGenerator states, which
    # save_weights leaves out. Without them a resumed run drops different units.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _metric_variables(model: keras.Model) -> list[Any]:
    # The running totals of the epoch's metrics (loss and compiled metrics): what a mid-epoch
    # backup needs so that the resumed epoch reports the mean over all its steps.
    return [v for m in model.metrics for v in m.variables]


def _rng_states(model: keras.Model) -> list[list[int]]:
    return [np.asarray(v.numpy()).tolist() for v in _rng_variables(model)]


def _set_rng_states(model: keras.Model, states: list | None) -> None:
    variables = _rng_variables(model)
    if states is None or len(states) != len(variables):
        return  # a backup from before RNG states were kept, or another model: leave them
    for variable, value in zip(variables, states, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _attrs(cb: keras.callbacks.Callback) -> dict[str, Any]:
    out = {}
    for name in TRACKED_ATTRS:
        value = getattr(cb, name, None)
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            out[name] = value.item() if isinstance(value, np.generic) else value
        elif value is None and hasattr(cb, name):
            out[name] = None
    return out


def _array_files(value: Any) -> list[str]:
    """The ``.npy`` files a backup state refers to (see :meth:`RunBackup._store_arrays`)."""
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            return [str(value[ARRAY_KEY])]
        return [name for v in value.values() for name in _array_files(v)]
    if isinstance(value, list):
        return [name for v in value for name in _array_files(v)]
    return []


def _load_state_arrays(value: Any, backup_dir: Path) -> Any:
    """A callback's backup state with its arrays read back from their files (verified
    against the manifest before)."""
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            path = backup_dir / str(value[ARRAY_KEY])
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                _refuse(path, f"unreadable: {type(exc).__name__}", backup_dir)
        return {k: _load_state_arrays(v, backup_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_load_state_arrays(v, backup_dir) for v in value]
    return value


def _backed_up_variables(model: keras.Model) -> list[Any]:
    """What a backup holds of the model, in a fixed order: every variable of its layers
    (trainable or not: batch norm's moving statistics) and of its optimizer."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.weights, *(optimizer.variables if optimizer is not None else [])]


def _save_variables(model: keras.Model, path: Path) -> None:
    """The model's and its optimizer's variables as plain arrays in one ``.npz``.

    Keras' ``save_weights`` writes the same values into HDF5 at 15-45 ms for a 10k-parameter
    MLP, 5-10x as long: a backup at every epoch end made it a visible share of a short run.
    """
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(_backed_up_variables(model))}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_variables(model: keras.Model, path: Path) -> None:
    """Put back what :func:`_save_variables` wrote; a backup of another model is refused
    (count or shape)."""
    if not model.weights:  # a subclassed model creates its variables at its first call
        raise ValueError(
            "the model has no variables to restore into yet: call it on a batch of inputs "
            "before fit (a subclassed model creates them at its first call)"
        )
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # its variables are in the file
    variables = _backed_up_variables(model)
    with np.load(path, allow_pickle=False) as saved:
        if len(saved.files) != len(variables):
            raise ValueError(
                f"it holds {len(saved.files)} variables, the model and its optimizer "
                f"{len(variables)}"
            )
        values = [saved[f"v{i:05d}"] for i in range(len(variables))]
    for variable, value in zip(variables, values, strict=True):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"variable {variable.path} has shape {tuple(variable.shape)}, "
                f"{tuple(value.shape)} in the backup"
            )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _load_arrays(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KerasdiagError(
            f"backup file {path} is corrupt ({type(exc).__name__}: {exc}); delete "
            f"{path.parent} to train this run from the start"
        ) from None
