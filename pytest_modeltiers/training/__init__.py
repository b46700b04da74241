"""Training: the lean loop for tier 3's sanity checks and real runs on Lightning.

PYTEST_DONT_REWRITE
"""
