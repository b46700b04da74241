"""What tier 2 looks at inside a model: attention maps, attributions, robustness.

PYTEST_DONT_REWRITE

Mechanisms only (getting the numbers); the judgements live in ``checks``. Nothing here is
imported by tier 1, and Captum is imported only by the functions that use it.
"""
