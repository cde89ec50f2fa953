"""One self-contained HTML report per run directory: ``build_report(run_dir)``.

Rebuild one from the command line with ``python scripts/report.py RUN_DIR``.
"""

from kerasdiag.report.builder import REPORT_FILE, build_report

__all__ = ["REPORT_FILE", "build_report"]
