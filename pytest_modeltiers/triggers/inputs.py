"""Turning what a caller has (eval metrics, a drift report, counts, times) into trigger inputs.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pytest_modeltiers.errors import (
    ModelTiersError,
    ModelTiersWarning,
    stacklevel_outside_package,
)
from pytest_modeltiers.store.metric_names import (
    MetricNameError,
    canonical_metric_name,
    resolve_metric_name,
    warn_old_spellings,
)

__all__ = [
    "TriggerInputError",
    "TriggerInputs",
    "as_number",
    "build_inputs",
    "drift_metrics_from_report",
    "normalize_metrics",
    "parse_utc",
]

#: Metadata keys the triggers read.
METADATA_KEYS = ("last_training_time", "current_count", "baseline_count")


class TriggerInputError(ModelTiersError, ValueError):
    """An input handed to a trigger is malformed (not missing: that is ``no_data``)."""


@dataclass(frozen=True)
class TriggerInputs:
    """What one window offers the triggers, already in the one naming scheme.

    ``drift`` maps ``drift/...`` names to numbers; ``current`` maps metric names to a number or
    a history (oldest first); ``baseline`` maps metric names to numbers; ``metadata`` carries
    ``last_training_time``, ``current_count`` and ``baseline_count``; ``now`` is aware UTC.
    """

    drift: Mapping[str, float]
    current: Mapping[str, float | tuple[float, ...]]
    baseline: Mapping[str, float]
    metadata: Mapping[str, Any]
    now: datetime


def parse_utc(value: Any, what: str, *, naive_as_utc: bool = False) -> datetime:
    """A timezone-aware ``datetime`` in UTC from an aware datetime or an ISO 8601 string with an
    offset or ``Z`` (the stores' format). Naive values are refused, their zone being a guess,
    unless ``naive_as_utc``: then they are read as UTC with a ``ModelTiersWarning`` (the usage
    guide's ``datetime.now().isoformat()``)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # fromisoformat accepts 'Z' only from Python 3.11
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TriggerInputError(
                f"{what} {value!r} is not an ISO 8601 timestamp; write it like "
                "'2024-05-01T12:00:00Z' or '2024-05-01T14:00:00+02:00'"
            ) from None
    else:
        raise TriggerInputError(
            f"{what} must be a timezone-aware datetime or an ISO 8601 string, got "
            f"{type(value).__name__} {value!r}"
        )
    if (parsed.tzinfo is None or parsed.utcoffset() is None) and naive_as_utc:
        warnings.warn(
            ModelTiersWarning(
                f"{what} {value!r} has no timezone; it is read as UTC. If it is local time "
                "(datetime.now()), the elapsed time is off by your UTC offset: pass "
                "datetime.now(timezone.utc), or an ISO string ending in 'Z' or '+00:00'"
            ),
            stacklevel=stacklevel_outside_package(),
        )
        parsed = parsed.replace(tzinfo=timezone.utc)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise TriggerInputError(
            f"{what} {value!r} has no timezone; give it one (datetime.now(timezone.utc), or "
            "an ISO string ending in 'Z' or '+00:00'): a naive time is read differently on "
            "machines in different zones"
        )
    return parsed.astimezone(timezone.utc)


def as_number(value: Any, what: str) -> float:
    """A real number from an int, float or numpy/0-d torch scalar (bools refused)."""
    if isinstance(value, bool):
        raise TriggerInputError(f"{what} is a bool ({value!r}); pass a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TriggerInputError(
            f"{what} must be a real number, got {type(value).__name__} {value!r}"
        ) from None


def _number_or_none(value: Any) -> float | None:
    if value is None:
        return None
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_report(value: Any) -> bool:
    return hasattr(value, "to_dict") and hasattr(value, "signals") and hasattr(value, "skipped")


def _is_report_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and "signals" in value and "drifted_share" in value


def drift_metrics_from_report(report: Any) -> dict[str, float]:
    """Flatten a ``DriftReport`` or its ``to_dict()`` into ``drift/...`` measures (module doc)."""
    data = report.to_dict() if _is_report(report) else report
    if not _is_report_dict(data):
        raise TriggerInputError(
            "expected a DriftReport or its to_dict(); got "
            f"{type(report).__name__} without 'signals' and 'drifted_share'"
        )
    out: dict[str, float] = {}
    share = _number_or_none(data.get("drifted_share"))
    signals = [s for s in data.get("signals") or () if isinstance(s, Mapping)]
    if share is not None and signals:
        out["drift/drifted_share"] = share
        out["drift/dataset_drifted"] = 1.0 if data.get("dataset_drifted") else 0.0
        out["drift/n_signals_drifted"] = float(sum(bool(s.get("drifted")) for s in signals))
        out["drift/n_signals"] = float(len(signals))
    maxima: dict[str, float] = {}
    n_current: list[float] = []
    for sig in signals:
        name = str(sig.get("name"))
        details = sig.get("details") or {}
        measures = {
            "statistic": _number_or_none(sig.get("statistic")),
            "p_value": _number_or_none(sig.get("p_value")),
            "drifted": 1.0 if sig.get("drifted") else 0.0,
            "js_distance": _number_or_none(details.get("jensen_shannon")),
            "wasserstein_normalized": _number_or_none(details.get("wasserstein_normalized")),
            "psi": _number_or_none(details.get("psi")),
        }
        count = _number_or_none(sig.get("n_current"))
        if count is not None:
            n_current.append(count)
        for measure, value in measures.items():
            if value is None:
                continue
            try:
                key = canonical_metric_name(f"{name}/{measure}", "drift", what="drift signal")
            except MetricNameError:
                continue  # a signal name that cannot be a path segment; dataset measures stay
            out[key] = value
            if measure in ("js_distance", "wasserstein_normalized", "psi") and not math.isnan(
                value
            ):
                maxima[measure] = max(maxima.get(measure, -math.inf), value)
    for measure, value in maxima.items():
        out[f"drift/{measure}"] = value
    if n_current:
        out["drift/n_current"] = min(n_current)
    return out


def normalize_metrics(
    metrics: Mapping[str, Any] | None,
    split: str | None = None,
    *,
    what: str = "metric",
    allow_history: bool = False,
    renamed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Names in the one scheme (qualified by ``split`` when given), values as floats.

    With ``allow_history`` a value may be a sequence of numbers (oldest first), kept as a tuple.
    With ``renamed``, old spellings (``val_loss``, ``js_divergence``) are read as their new
    names and recorded there (old -> new) for the caller's one warning; without it they are
    refused.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TriggerInputError(f"{what}s must be a dict of name -> value, got {type(metrics)}")
    out: dict[str, Any] = {}
    for name, raw in metrics.items():
        if renamed is None:
            key = canonical_metric_name(name, split, what=what)
        else:
            key, old = resolve_metric_name(name, split, what=what)
            if old is not None:
                renamed[old] = key
        if allow_history and isinstance(raw, Sequence) and not isinstance(raw, str):
            if not raw:
                raise TriggerInputError(f"{what} {key!r} has an empty history")
            out[key] = tuple(as_number(v, f"{what} {key!r}") for v in raw)
        else:
            out[key] = as_number(raw, f"{what} {key!r}")
    return out


def normalize_drift(drift: Any, renamed: dict[str, str] | None = None) -> dict[str, float]:
    """Drift input as ``drift/...`` measures: a report, its dict, or a flat dict of measures
    (``renamed`` as in :func:`normalize_metrics`)."""
    if drift is None:
        return {}
    if _is_report(drift) or _is_report_dict(drift):
        return drift_metrics_from_report(drift)
    if isinstance(drift, Mapping):
        return normalize_metrics(drift, "drift", what="drift metric", renamed=renamed)
    raise TriggerInputError(
        "drift must be a DriftReport, its to_dict(), or a dict of drift measures such as "
        f"{{'drift/js_distance': 0.12}}, got {type(drift).__name__}"
    )


def build_inputs(
    *,
    drift: Any = None,
    current_metrics: Mapping[str, Any] | None = None,
    baseline_metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: datetime | str | None = None,
    split: str | None = None,
) -> TriggerInputs:
    """Prepare one window's inputs (names canonical, ``now`` aware UTC, default: the clock).

    ``split`` qualifies bare names in ``current_metrics`` and ``baseline_metrics``
    (``{"loss": 0.3}`` with ``split="eval"`` is ``eval/loss``).
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TriggerInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    moment = datetime.now(timezone.utc) if now is None else parse_utc(now, "now")
    renamed: dict[str, str] = {}
    inputs = TriggerInputs(
        drift=normalize_drift(drift, renamed),
        current=normalize_metrics(current_metrics, split, allow_history=True, renamed=renamed),
        baseline=normalize_metrics(
            baseline_metrics, split, what="baseline metric", renamed=renamed
        ),
        metadata=dict(metadata or {}),
        now=moment,
    )
    warn_old_spellings(renamed)
    return inputs
