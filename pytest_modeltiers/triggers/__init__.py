"""Retraining triggers: rules, composites, configs and policies, the manager and its report.

PYTEST_DONT_REWRITE

``inputs`` (what a trigger reads, built from metrics and drift reports), ``base`` (what every
trigger shares), ``rules`` (the five triggers and the factory), ``config`` (configs, presets,
policies from JSON), ``manager`` (the manager and ``evaluate_retraining``), ``report``
(``RetrainingReport``). Importing this package imports nothing.
"""
