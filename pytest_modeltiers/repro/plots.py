"""SVG plots of a run's curves, one per metric, for its reproducibility bundle.

PYTEST_DONT_REWRITE

matplotlib (the ``[report]`` extra) is imported here only, and only when a bundle is written
with plots; figures are drawn without pyplot, so the process's backend is left as it is. The
SVGs carry no date and a fixed id salt, so the same metrics give the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["curve_plots", "plot_member_name"]


def plot_member_name(metric: str) -> str:
    return "plots/" + re.sub(r"[^\w.-]+", "_", metric).strip("_") + ".svg"


def curve_plots(rows: Iterable[Mapping[str, Any]], title: str) -> dict[str, bytes]:
    """``{member name: SVG bytes}``: each metric of ``rows`` (``metric_name``, ``value``,
    ``epoch``, ``step``) against its epoch (its step when it has no epoch)."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        value = row.get("value")
        if value is None or not math.isfinite(float(value)):
            continue
        x = row.get("epoch")
        if x is None or (isinstance(x, float) and math.isnan(x)):
            x = row.get("step")
        if x is None or (isinstance(x, float) and math.isnan(x)):
            continue
        curves.setdefault(str(row["metric_name"]), []).append((float(x), float(value)))
    plots: dict[str, bytes] = {}
    with matplotlib.rc_context({"svg.hashsalt": "modeltiers", "svg.fonttype": "none"}):
        for metric, points in sorted(curves.items()):
            points.sort()
            figure = Figure(figsize=(6, 4))
            axes = figure.add_subplot()
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o")
            axes.set_xlabel("epoch")
            axes.set_ylabel(metric)
            axes.set_title(f"{title}: {metric}")
            axes.grid(True, alpha=0.3)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None})
            plots[plot_member_name(metric)] = buffer.getvalue()
    return plots
