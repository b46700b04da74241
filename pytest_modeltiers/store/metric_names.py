"""One metric naming scheme for the experiment DB, the model registry, the triggers and the engine.

PYTEST_DONT_REWRITE

Two spellings of one metric (``val/loss`` logged, ``val_loss`` watched) make a trigger that
silently never fires. So every component that takes a metric name passes it through
:func:`canonical_metric_name`, which applies the experiment DB's scheme
(:func:`~pytest_modeltiers.store.experiment_db.qualify_metric_name`: ``"<split>/<name>"``, or
a bare name without a split) and refuses the underscore form (``val_loss``,
``train_accuracy``), naming the slash form to use instead. A bare name such as ``loss`` or
``learning_rate`` stays legal: it simply has no split.
"""

from __future__ import annotations

import re

from pytest_modeltiers.store.experiment_db import qualify_metric_name
from pytest_modeltiers.store.sqlite_base import StoreError

__all__ = ["LEGACY_SPLIT_PREFIXES", "MetricNameError", "canonical_metric_name"]

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
