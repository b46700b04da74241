"""One metric naming scheme for the experiment DB, the model registry, the triggers and the engine.

PYTEST_DONT_REWRITE

Two spellings of one metric (``val/loss`` logged, ``val_loss`` watched) make a trigger that
silently never fires. So every component that takes a metric name passes it through
:func:`canonical_metric_name`, which applies the experiment DB's scheme
(:func:`~pytest_modeltiers.store.experiment_db.qualify_metric_name`: ``"<split>/<name>"``, or
a bare name without a split) and refuses the underscore form (``val_loss``,
``train_accuracy``), naming the slash form to use instead. A bare name such as ``loss`` or
``learning_rate`` stays legal: it simply has no split.

The places a reader of the old usage guide writes names into (trigger configs, trigger
inputs, the model registry) go through :func:`resolve_metric_name` instead: an old spelling
whose meaning is unambiguous (``val_loss`` is ``val/loss``; ``js_divergence`` is the drift
measure ``drift/js_distance``, which is what the old name measured) is read as the new one,
and :func:`warn_old_spellings` raises one ``DeprecationWarning`` per call naming the new
spelling, pointed at the caller's line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

from pytest_modeltiers.errors import stacklevel_outside_package
from pytest_modeltiers.store.experiment_db import qualify_metric_name
from pytest_modeltiers.store.sqlite_base import StoreError

__all__ = [
    "LEGACY_SPLIT_PREFIXES",
    "RENAMED_METRICS",
    "MetricNameError",
    "canonical_metric_name",
    "resolve_metric_name",
    "warn_old_spellings",
]

#: Old names (in their stored form) that now have another name with the same meaning.
RENAMED_METRICS: dict[str, str] = {"drift/js_divergence": "drift/js_distance"}

#: Splits whose underscore form (``val_loss``) is the old scheme and therefore refused.
LEGACY_SPLIT_PREFIXES = ("train", "val", "validation", "eval", "test")

_LEGACY = re.compile(rf"^({'|'.join(LEGACY_SPLIT_PREFIXES)})_(.+)$")


class MetricNameError(StoreError, ValueError):
    """A metric name does not follow the one naming scheme; the message names the fix."""


def canonical_metric_name(name: str, split: str | None = None, *, what: str = "metric") -> str:
    """The stored form of a metric name: ``split/name`` when a split is given or present.

    ``canonical_metric_name("loss", "val") == "val/loss"``; ``"val/loss"`` stays as it is;
    ``"val_loss"`` raises :class:`MetricNameError` suggesting ``"val/loss"``.
    """
    if isinstance(name, str):
        legacy = _LEGACY.match(name)
        if legacy is not None and split is None:
            raise MetricNameError(
                f"{what} name {name!r} uses the old underscore scheme; write "
                f"'{legacy.group(1)}/{legacy.group(2)}' (names are 'split/name', the way the "
                "experiment database stores them)"
            )
    try:
        full, _ = qualify_metric_name(name, split)
    except StoreError as exc:
        raise MetricNameError(f"{what}: {exc}") from None
    return full


def resolve_metric_name(
    name: str, split: str | None = None, *, what: str = "metric"
) -> tuple[str, str | None]:
    """``(stored name, old spelling or None)``: like :func:`canonical_metric_name`, but an old
    spelling (``val_loss``, ``js_divergence``) is read as its new name instead of refused.

    The caller collects the old spellings of one call and passes them to
    :func:`warn_old_spellings`, so a call warns once however many names it maps.
    """
    if isinstance(name, str) and split is None:
        legacy = _LEGACY.match(name)
        if legacy is not None:
            full = canonical_metric_name(f"{legacy.group(1)}/{legacy.group(2)}", what=what)
            return RENAMED_METRICS.get(full, full), name
    full = canonical_metric_name(name, split, what=what)
    if full in RENAMED_METRICS:
        return RENAMED_METRICS[full], name
    return full, None


def warn_old_spellings(renamed: Mapping[str, str]) -> None:
    """One ``DeprecationWarning`` naming the new spelling of every old name in ``renamed``
    (old -> new); nothing when it is empty."""
    if not renamed:
        return
    pairs = ", ".join(f"{old!r} as {new!r}" for old, new in renamed.items())
    why = "names are 'split/name', the way the experiment database stores them"
    if any(new in RENAMED_METRICS.values() for new in renamed.values()):
        why += "; the old 'js_divergence' measured the Jensen-Shannon distance"
    warnings.warn(
        f"old metric name spelling read as the new one: {pairs}; write the new spelling ({why})",
        DeprecationWarning,
        stacklevel=stacklevel_outside_package(),
    )
