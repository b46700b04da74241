"""Tier 3 checks: does the model train? (One import path for the suite and for users.)

PYTEST_DONT_REWRITE

Each check is a plain function returning a ``CheckResult`` (``check_name`` is the built-in test
name, tier 3). They run the lean loop (``training.lean_loop``), never Lightning; this module
gathers them, and ``check_training_run`` (``tier3_run``), which judges the one real
``run_training`` of the session (Lightning is imported only when that run happens).
"""

from __future__ import annotations

from pytest_modeltiers.checks.tier3_run import (
    TrainingOutcome,
    check_training_run,
    execute_training_run,
    short_run_config,
)
from pytest_modeltiers.checks.tier3_training import (
    ACCUMULATION_ATOL,
    ACCUMULATION_RTOL,
    OVERFIT_LR,
    OVERFIT_MAX_STEPS,
    RESUME_ATOL,
    RESUME_RTOL,
    check_gradient_accumulation_equivalence,
    check_overfit_single_batch,
    check_resume_equivalence,
    check_seed_reproducibility,
)

__all__ = [
    "ACCUMULATION_ATOL",
    "ACCUMULATION_RTOL",
    "OVERFIT_LR",
    "OVERFIT_MAX_STEPS",
    "RESUME_ATOL",
    "RESUME_RTOL",
    "TrainingOutcome",
    "check_gradient_accumulation_equivalence",
    "check_overfit_single_batch",
    "check_resume_equivalence",
    "check_seed_reproducibility",
    "check_training_run",
    "execute_training_run",
    "short_run_config",
]
