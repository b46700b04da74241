"""Loading a model, checking it is safe to run, and calling it through its task adapter.

PYTEST_DONT_REWRITE
"""
