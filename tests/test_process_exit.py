"""The command line's fast exit: what any exit does still happens, with the status given."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from kerasdiag.core.process_exit import exit_code_of

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_threads_atexit_and_buffered_output_run_down_before_the_status(tmp_path):
    done = _run(
        """
        import atexit, concurrent.futures, logging, sys, threading, time
        from pathlib import Path
        from kerasdiag.core.process_exit import exit_process

        def late_write():
            time.sleep(0.3)
            Path("thread.txt").write_text("joined")

        threading.Thread(target=late_write).start()  # not a daemon: joined first
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.submit(lambda: (time.sleep(0.3), Path("queued.txt").write_text("ran")))
        atexit.register(lambda: Path("atexit.txt").write_text("ran"))
        handler = logging.FileHandler("log.txt", delay=False)
        logging.getLogger("t").addHandler(handler)
        logging.getLogger("t").warning("logged")
        sys.stdout.write("buffered, no newline")
        exit_process(5)
        """,
        tmp_path,
    )
    assert done.returncode == 5, done.stderr
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread.txt").read_text() == "joined"
    assert (tmp_path / "queued.txt").read_text() == "ran"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "logged\n"


def test_finalizers_of_live_objects_are_what_it_skips(tmp_path):
    """The teardown it saves: objects still alive at exit are not finalized one by one."""
    code = """
        import sys
        from kerasdiag.core.process_exit import exit_process

        class Noisy:
            def __del__(self):
                sys.stderr.write("finalized")

        kept = Noisy()
        {end}
        """
    fast = _run(code.format(end="exit_process(0)"), tmp_path)
    plain = _run(code.format(end="sys.exit(0)"), tmp_path)
    assert (fast.returncode, plain.returncode) == (0, 0)
    assert "finalized" in plain.stderr and "finalized" not in fast.stderr


def test_exit_status_of_system_exit_values():
    assert [exit_code_of(SystemExit(v)) for v in (None, 0, 2, 143, "message")] == [0, 0, 2, 143, 1]
