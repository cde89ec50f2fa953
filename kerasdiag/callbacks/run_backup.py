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
  and best weights, ReduceLROnPlateau's wait, cooldown and best;
- a fit that already ended (all epochs, or stopped early) is not trained again;
- verified: the SHA-256 of every file is written into ``state.json`` with it and checked
  before a resume, so a file changed since (weights overwritten inside a valid HDF5 file, a
  truncated ``.npz``) is refused in one line instead of resuming a different run.

The optimizer's variables are part of the weights file, so moments, the iteration count (hence
the position of a per-step learning-rate schedule) and a plateau-reduced learning rate all
resume where they were; the layers' random streams (Keras' SeedGenerator states, which
``save_weights`` leaves out: dropout masks) travel in ``state.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.io import atomic_path, remove_stale_temporaries, sha256_file, write_json_atomic
from kerasdiag.core.rundir import RunLayout

# Counters and best values of keras' EarlyStopping and ReduceLROnPlateau (and any callback
# that keeps its progress in attributes of these names).
TRACKED_ATTRS = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


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
        self._pending_states: list[dict[str, Any]] | None = None
        self._final_weights: list[np.ndarray] | None = None

    # -- restore ------------------------------------------------------------------------------

    def resume_epoch(self) -> int:
        """Epochs the backup holds (0 without one): where the training data stream starts."""
        state = read_backup_state(self.backup_dir, strict=False)
        return 0 if state is None else int(state["epoch"])

    def on_train_begin(self, logs=None):
        self.restored_epoch = None
        self._pending_states = self._final_weights = None
        state = read_backup_state(self.backup_dir)
        if state is None:
            return
        verify_backup(self.backup_dir, state)
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are in the file
        weights = self.backup_dir / state["weights"]
        try:
            model.load_weights(weights)
        except Exception as exc:
            raise KerasdiagError(
                f"cannot resume from backup {weights}: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}; delete {self.backup_dir} to start this "
                "run over"
            ) from None
        _set_rng_states(model, state.get("rng"))
        states = state.get("callbacks", [])
        epochs = int(self.params.get("epochs", 0) or 0)
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
        else:
            model._initial_epoch = self.restored_epoch
            # Applied at the first epoch begin, after every callback's on_train_begin reset.
            self._pending_states = states
            print(f"RunBackup: resuming after epoch {self.restored_epoch} from {self.backup_dir}")

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending_states is not None:
            for cb, saved in zip(self.track, self._pending_states, strict=False):
                if saved.get("class") != type(cb).__name__:
                    continue  # the callback list changed: leave that one fresh
                for name, value in (saved.get("attrs") or {}).items():
                    setattr(cb, name, value)
                if saved.get("best_weights"):
                    cb.best_weights = _load_arrays(self.backup_dir / saved["best_weights"])
            self._pending_states = None

    def _best_weights_to_restore(self, states: list[dict[str, Any]]) -> list[np.ndarray] | None:
        for cb, saved in zip(self.track, states, strict=False):
            if getattr(cb, "restore_best_weights", False) and saved.get("best_weights"):
                return _load_arrays(self.backup_dir / saved["best_weights"])
        return None

    # -- back up ------------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        stem = f"epoch{epoch + 1:04d}"
        weights = self.backup_dir / f"{stem}.weights.h5"
        checksums = {}
        with atomic_path(weights) as tmp:
            self.model.save_weights(tmp)
            checksums[weights.name] = sha256_file(tmp)
        states = []
        for i, cb in enumerate(self.track):
            saved: dict[str, Any] = {"class": type(cb).__name__, "attrs": _attrs(cb)}
            best = getattr(cb, "best_weights", None)
            if best is not None:
                path = self.backup_dir / f"{stem}-callback{i}-best_weights.npz"
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, *[np.asarray(w) for w in best])
                    checksums[path.name] = sha256_file(tmp)
                saved["best_weights"] = path.name
            states.append(saved)
        write_json_atomic(
            self.backup_dir / RunLayout.BACKUP_STATE,
            {"epoch": epoch + 1, "weights": weights.name, "callbacks": states,
             "rng": _rng_states(self.model), "checksums": checksums, "finished": False},
        )  # fmt: skip
        self._remove_unreferenced(keep={weights.name, *(s.get("best_weights") for s in states)})

    def on_train_end(self, logs=None):
        if self._final_weights is not None:
            self.model.set_weights(self._final_weights)
            self._final_weights = None
        if self.delete_on_train_end:
            remove_backup(self.backup_dir)
            return
        state = read_backup_state(self.backup_dir, strict=False)
        if state is not None and not state.get("finished"):
            write_json_atomic(self.backup_dir / RunLayout.BACKUP_STATE, {**state, "finished": True})

    def _remove_unreferenced(self, keep: set) -> None:
        remove_stale_temporaries(self.backup_dir)
        for path in self.backup_dir.iterdir():
            if path.name != RunLayout.BACKUP_STATE and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)


def read_backup_state(backup_dir: str | os.PathLike, strict: bool = True) -> dict | None:
    """The backup's ``state.json`` (epoch, weights file, callback states), or None if none.

    With ``strict``, an unreadable state is a one-line KerasdiagError (it is written atomically,
    so this means someone else changed the folder).
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


def verify_backup(backup_dir: str | os.PathLike, state: dict) -> None:
    """Check every file ``state`` names against the SHA-256 written with it.

    A file changed after it was written (weights overwritten inside a still-valid HDF5 file,
    a truncated ``.npz``) would resume a different run silently, or end in a traceback: it is a
    one-line KerasdiagError naming the file and what to do. Backups written before checksums
    existed are taken as they are.
    """
    backup_dir = Path(backup_dir)
    for name, expected in (state.get("checksums") or {}).items():
        path = backup_dir / str(name)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            actual = f"unreadable ({exc.strerror or type(exc).__name__})"
        if actual != expected:
            what = actual if actual.startswith("unreadable") else "its checksum does not match"
            raise KerasdiagError(
                f"backup file {path} is corrupt ({what}: it changed after it was written); "
                f"resuming from it would not continue this run. Delete {backup_dir} to train "
                "this run from the start, or start a new run in a new directory"
            )


def remove_backup(backup_dir: str | os.PathLike) -> None:
    """Delete a backup folder (when its run has completed)."""
    shutil.rmtree(backup_dir, ignore_errors=True)


def _rng_variables(model: keras.Model) -> list[Any]:
    # Dropout's (and other layers') random streams: Keras' SeedGenerator states, which
    # save_weights leaves out. Without them a resumed run drops different units.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


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


def _load_arrays(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KerasdiagError(
            f"backup file {path} is corrupt ({type(exc).__name__}: {exc}); delete "
            f"{path.parent} to train this run from the start"
        ) from None
