"""Drift: the statistics, per-signal verdicts, reference profiles and their storage (tier 5).

PYTEST_DONT_REWRITE

``statistics`` (two-sample tests and distances), ``verdicts`` (drift per signal and per
dataset), ``profile`` (a profile as data and JSON), ``distribution`` (computing and comparing
profiles), ``profile_io`` (files and the experiment database). Importing this package imports
nothing; its modules import numpy and scipy.
"""
