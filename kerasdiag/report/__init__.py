"""One self-contained HTML report per run directory: ``build_report(run_dir)``.

Rebuild one from the command line with ``python scripts/report.py RUN_DIR``.
"""

from kerasdiag.report.builder import build_report

__all__ = ["build_report"]
