"""One training run as ``scripts/train.py`` runs it: data, model, sanity stages, ``fit`` with
the run's callbacks, test evaluation, the diagnosis and the report (``pipeline``)."""
