"""Evaluation: held-out metrics, baseline regression and the metrics engine (tier 5).

PYTEST_DONT_REWRITE

``held_out`` (``run_evaluation`` and its per-example values), ``regression``
(``compare_models``: is the candidate worse than the baseline, beyond doubt),
``metrics_engine`` (``MetricsEngine``: where an epoch's metrics go). Importing this package
imports nothing; its modules import torch, numpy and scipy.
"""
