"""The sections of ``report.html``, grouped by theme; the page's order is builder.SECTIONS.

Each section is a function ``section(run: RunContext) -> list[Block]``: it reads what it
needs from the run's files and returns the blocks to show, or one
:func:`~kerasdiag.report.blocks.absent` line naming the file that is missing. A section
may raise on a malformed file; the builder shows that section's error and goes on.
"""
