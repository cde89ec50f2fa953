"""Python's cyclic garbage collector while the command line starts.

Why: importing Hydra, scikit-learn, TensorFlow and Keras creates ~440,000 objects that live as
long as the process, and almost no garbage. The collector still walks the whole heap at every
full pass, and the passes came more often as the heap grew. On this project's 2-core machine,
a default run's start-up held eight of them, each longer than the last (0.01 s to 0.23 s,
~0.9 s in all), and together they freed ~9,000 objects. After start-up, every full pass walked
the imports again (0.29 s for the one at the report).

So the command line calls :func:`pause_collection` before its imports. Once TensorFlow is
loaded, :func:`resume_collection` moves every object alive into the collector's permanent
generation (``gc.freeze``), which later passes skip, and switches the collector back on.
Reference counting frees memory as always throughout; only cycles created during start-up
are never collected (a few thousand objects). A library user's process is left as it is.

Example:
    >>> import gc
    >>> pause_collection(); gc.isenabled()
    False
    >>> resume_collection(); gc.isenabled(), gc.get_freeze_count() > 0
    (True, True)
    >>> frozen = gc.get_freeze_count(); resume_collection(); gc.get_freeze_count() == frozen
    True
    >>> gc.unfreeze()
"""

from __future__ import annotations

import gc


def pause_collection() -> None:
    """Switch the cyclic collector off for the imports of start-up."""
    gc.disable()


def resume_collection() -> None:
    """Exempt every object alive now (start-up's imports) from later collections, then switch
    the collector back on. Once: with the collector on already (a multirun's later jobs), it
    does nothing, since freezing then would keep an earlier job's garbage cycles for good."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()
