"""The command line's collector pause: off for start-up, then on with start-up's objects frozen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_startup_objects_are_frozen_and_later_cycles_still_collected():
    code = textwrap.dedent(
        """
        import gc, weakref
        from kerasdiag.core.heap import pause_collection, resume_collection

        class Node:
            pass

        pause_collection()
        assert not gc.isenabled()
        startup = Node(); startup.me = startup  # a cycle alive at start-up's end
        resume_collection()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        resume_collection()  # a multirun's next job: nothing more is frozen
        assert gc.get_freeze_count() == frozen

        later = Node(); later.me = later  # garbage made after start-up: collected as usual
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
        kept = weakref.ref(startup)
        del startup
        gc.collect()  # start-up's cycle is frozen: the collector does not walk it
        assert kept() is not None
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
