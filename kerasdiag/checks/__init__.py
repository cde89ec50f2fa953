"""Checks run before training: gradient checks (``gradcheck``), the sanity stages
(``sanity``), the learning-rate range test (``lr_range``) and data checks (``data``)."""
