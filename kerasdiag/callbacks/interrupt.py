"""``StopOnSignal``: leave ``fit`` at the next batch end after SIGTERM/SIGINT, backed up there.

A preempted or Ctrl-C'd run should lose neither the steps it trained nor its files. The signal
handler (:func:`kerasdiag.core.signals.install_stop_handlers`) only records the signal; this
callback is the safe point that acts on it: at the next batch end it asks the ``RunBackup``
for a backup at that step (the resumed ``fit`` continues from the next step, so with
deterministic training it ends as the uninterrupted run would have) and raises
:class:`~kerasdiag.core.signals.RunInterrupted` out of ``fit``. Raising, rather than setting
``model.stop_training``, keeps the partial epoch out of every epoch-end record (metrics.csv,
checkpoints, the epoch backup): Keras would otherwise end that epoch, validate it and record
it as complete. A stop asked for before training begins (during the sanity checks) is honoured
at ``on_train_begin``, before any step.

Example (runnable):

    import os, signal

    import keras
    import numpy as np

    from kerasdiag.callbacks import StopOnSignal
    from kerasdiag.callbacks.run_backup import RunBackup
    from kerasdiag.core.signals import RunInterrupted, install_stop_handlers

    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Preempt(keras.callbacks.Callback):  # stands in for the scheduler
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    install_stop_handlers()
    backup = RunBackup("my_backup")
    try:
        model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                  callbacks=[backup, StopOnSignal(backup), Preempt()])
    except RunInterrupted as stop:
        print(stop, stop.exit_code)  # stopped by SIGTERM in epoch 1 after step 4; ... 143
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from kerasdiag.callbacks.run_backup import RunBackup
from kerasdiag.core.signals import RunInterrupted, stop_requested


class StopOnSignal(keras.callbacks.Callback):
    """Stop ``fit`` politely at the next batch end once SIGTERM or SIGINT arrived.

    Args:
        backup: the fit's ``RunBackup``, asked for a backup at the step where training stops
            (None: stop without one; the last epoch backup, if any, stays).

    Raises:
        RunInterrupted: out of ``fit``, with ``exit_code`` 128 + the signal's number.
    """

    # It raises out of fit: its batch hook must run in the training thread, not Keras'
    # asynchronous dispatch thread.
    async_safe = False

    def __init__(self, backup: RunBackup | None = None):
        super().__init__()
        if backup is not None and not isinstance(backup, RunBackup):
            raise ValueError(f"`backup` must be a RunBackup or None. Received: {backup!r}")
        self.backup = backup
        self._epoch = 0

    @classmethod
    def after(cls, callbacks: Iterable[keras.callbacks.Callback]) -> StopOnSignal:
        """A StopOnSignal that backs up with the ``RunBackup`` among ``callbacks``, if any.

        That backup then also carries the record of every callback in the list that keeps
        one (:meth:`RunBackup.carry`): a backup taken at a step (this callback's) or at an
        epoch end must hold the whole run's state at that moment, not only the weights.
        """
        callbacks = list(callbacks)
        backup = next((cb for cb in callbacks if isinstance(cb, RunBackup)), None)
        if backup is not None:
            backup.carry(callbacks)
        return cls(backup)

    def on_train_begin(self, logs=None):
        self._epoch = 0
        signum = stop_requested()
        if signum is not None:
            raise RunInterrupted(signum, "before training started")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        signum = stop_requested()
        if signum is None:
            return
        where = f"in epoch {self._epoch + 1} after step {batch + 1}"
        if self.backup is not None and self.backup.save_step(self._epoch, batch + 1):
            where += f", backed up in {self.backup.backup_dir}"
        elif self.backup is not None:
            where += f", the backup in {self.backup.backup_dir} kept"
        raise RunInterrupted(signum, where)
