"""Hypothesis budgets for the property-based checks: ``fast``, ``ci`` and ``thorough``.

PYTEST_DONT_REWRITE

The profiles are registered under ``modeltiers-<name>`` and loaded only when a model is named,
so a project's own Hypothesis settings are untouched otherwise. Deadlines are off: a model's
forward pass varies in time on a shared machine, and a deadline would turn that noise into
flaky failures. ``ci`` is derandomized so the same commit draws the same examples.
"""

from __future__ import annotations

BUDGETS = {"fast": 10, "ci": 25, "thorough": 200}


def profile_name(name: str) -> str:
    return f"modeltiers-{name}"


def load_profile(name: str) -> str:
    """Register the three profiles (idempotent), make ``name`` active, return the previous one."""
    from hypothesis import HealthCheck, settings

    previous = settings.get_current_profile_name()
    for key, examples in BUDGETS.items():
        settings.register_profile(
            profile_name(key),
            max_examples=examples,
            deadline=None,
            derandomize=key == "ci",
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=True,
        )
    settings.load_profile(profile_name(name))
    return previous


def restore_profile(previous: str) -> None:
    """Reactivate the profile that was active before ``load_profile``."""
    from hypothesis import settings

    settings.load_profile(previous)
