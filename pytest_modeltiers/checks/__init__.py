"""The tier checks: plain functions that return a ``CheckResult``, one module per tier.

PYTEST_DONT_REWRITE
"""
