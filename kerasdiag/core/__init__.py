"""Foundations every other part of kerasdiag stands on, none of them TensorFlow: errors, atomic
file writes and safe loading (``io``), the run directory's layout (``rundir``), plain-text
tables, names of runs and recipes, argument checks and lazy exports."""
