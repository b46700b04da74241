"""Plots of the health report's checks, drawn with Matplotlib as SVG text.

PYTEST_DONT_REWRITE

Where a picture says more than the numbers: tier 1 finiteness and batch-independence error by
batch size and length, tier 3 loss curves, tier 4 parity error by shape and latency by format,
tier 5 reference against current distributions and the values behind each retraining trigger.
Each plot is drawn from a check's JSON dict (``CheckResult.to_dict()``) alone, so a report read
back from its file draws the same pictures. A check whose details lack the data draws nothing.

Matplotlib is imported inside the functions that draw: importing this module costs nothing, and
a run that asks for no HTML never loads Matplotlib. Figures are ``matplotlib.figure.Figure``
objects saved straight to SVG (no pyplot, so no global backend or figure registry is touched),
with text kept as text (``svg.fonttype: none``) and ids salted, so the SVG is small and the
same report draws the same bytes.
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator

__all__ = ["Plot", "draw_check", "draw_checks", "plot_worthy", "preload", "svg_of"]

#: Colours: the reference and current sides of a comparison, a threshold, passing and failing.
REFERENCE, CURRENT, THRESHOLD = "#1f77b4", "#ff7f0e", "#d62728"
GOOD, BAD = "#2ca02c", "#d62728"

_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "pytest-modeltiers",
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.grid": True,
    "axes.grid.axis": "y",
    # The title sits right above the panel (the tick labels are below it): Matplotlib's
    # automatic placement measures the panel's y axis once more to find the same place, unless
    # the axis writes a multiplier there (``_grid``'s ``any_scale_y``).
    "axes.titley": 1.0,
    # Tick labels carry their whole value: no "+5.3" beside the axis, whose place above the
    # y axis the title would share.
    "axes.formatter.useoffset": False,
    "grid.alpha": 0.3,
    "figure.dpi": 100.0,
    "xtick.major.size": 2.0,
    "ytick.major.size": 2.0,
    # The grid lines mark the y ticks, and the frame is the two axes: each mark and spine is
    # one more artist to draw, with nothing to say.
    "ytick.left": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
#: The first tensor of a batch signature: ``input_ids[4,16] attention_mask[4,16]`` -> ``4,16``.
_FIRST_SHAPE = re.compile(r"\[([0-9,\s]+)\]")


@dataclass(frozen=True)
class Plot:
    """One check's figure: ``key`` names its file (``<key>.svg``), ``svg`` is the drawing."""

    key: str
    title: str
    check_name: str
    tier: int
    model: str | None
    svg: str


def preload() -> None:
    """Import Matplotlib and load its font list now (before a sandbox closes the home folder,
    where Matplotlib keeps its font cache)."""
    from matplotlib import font_manager
    from matplotlib.backends import backend_svg  # noqa: F401  (imported for its cost, now)
    from matplotlib.figure import Figure  # noqa: F401

    font_manager.findfont("DejaVu Sans")


# --------------------------------------------------------------------------- data helpers


def _number(value: Any) -> float | None:
    """A finite float, or None (the JSON writes NaN and infinities as strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def batch_and_length(signature: Any) -> tuple[int | None, int | None]:
    """Batch size and sequence length of a batch signature's first tensor; the length only for
    a two-dimensional (token) tensor, since an image's second dimension is its channels."""
    if not isinstance(signature, str):
        return None, None
    match = _FIRST_SHAPE.search(signature)
    if match is None:
        return None, None
    dims = [int(part) for part in match.group(1).split(",") if part.strip()]
    if not dims:
        return None, None
    return dims[0], dims[1] if len(dims) == 2 else None


def _losses(values: Any) -> list[float | None]:
    if not isinstance(values, list):
        return []
    return [_number(value) for value in values]


def _base_name(check_name: str) -> str:
    return check_name.split("[", 1)[0]


def _param(check_name: str) -> str:
    return check_name.partition("[")[2].rstrip("]")


# --------------------------------------------------------------------------- figures


#: Ticks are most of a panel's drawing time: each is five artists (two marks, a grid line, two
#: labels) created, measured and drawn. So an axis gets three to five: MaxNLocator's intervals
#: (``nbins``), and the fewest ticks in view, for real values and for whole numbers (a count,
#: a step, a batch size, where 0 and 1 may be all there is).
_TICKS_REAL = {"nbins": 3, "min_n_ticks": 3}
_TICKS_INTEGER = {"nbins": 4, "min_n_ticks": 2, "integer": True}


@functools.cache
def _in_view_locators() -> tuple[type[MaxNLocator], type[SymmetricalLogLocator]]:
    """Matplotlib's tick locators, returning only the ticks inside the view.

    Matplotlib lays out a tick for every location its locator returns and then draws those in
    view; ``MaxNLocator`` and ``SymmetricalLogLocator`` return one or two on either side."""
    from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator

    def in_view(locator: MaxNLocator | SymmetricalLogLocator, ticks: Any) -> list[float]:
        if locator.axis is None:  # not given to an axis: no view to keep the ticks in
            return list(ticks)
        low, high = sorted(locator.axis.get_view_interval())
        slack = (high - low) * 1e-9  # a tick on the edge, computed with a rounding error
        return [tick for tick in ticks if low - slack <= tick <= high + slack]

    class InViewMaxNLocator(MaxNLocator):
        def __call__(self) -> list[float]:
            return in_view(self, super().__call__())

    class InViewSymmetricalLogLocator(SymmetricalLogLocator):
        def __call__(self) -> list[float]:
            return in_view(self, super().__call__())

    return InViewMaxNLocator, InViewSymmetricalLogLocator


def _ticks(*, integer: bool = False) -> MaxNLocator:
    """Three to five ticks at round numbers (Matplotlib's default steps); on an ``integer``
    axis at whole numbers only."""
    return _in_view_locators()[0](
        steps=[1, 2, 2.5, 5, 10], **(_TICKS_INTEGER if integer else _TICKS_REAL)
    )


#: Margins around a figure's grid of panels, in inches: room for tick labels, axis labels, a
#: two-line panel title and the figure's title. Fixed margins cost nothing to compute, where
#: Matplotlib's constrained layout measures every text twice (half the drawing time).
_MARGINS = {"left": 0.75, "right": 0.15, "bottom": 0.55, "top": 0.5, "between": 0.75}


def _grid(
    count: int,
    *,
    columns: int = 2,
    cell: tuple[float, float] = (3.4, 2.4),
    bottom: float = _MARGINS["bottom"],
    top: float = _MARGINS["top"],
    sharey: bool = False,
    integer_x: bool = False,
    any_scale_y: bool = False,
) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels, ``columns`` to a row, each ``cell`` inches large;
    ``integer_x`` when the x axis counts something (steps, batch sizes), ``any_scale_y`` when
    the y values can be of any size (a loss, a metric)."""
    from matplotlib import rc_context, rcParams
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.transforms import ScaledTranslation

    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    width = cell[0] * columns
    height = cell[1] * rows + bottom - _MARGINS["bottom"] + top - _MARGINS["top"]
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(
        rows,
        columns,
        left=_MARGINS["left"] / width,
        right=1 - _MARGINS["right"] / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=_MARGINS["between"] / (cell[0] - _MARGINS["between"]),
        hspace=_MARGINS["between"] / (cell[1] - _MARGINS["between"]),
    )
    # Only the panels drawn: an Axes costs as much to make as to draw.
    flat: list[Axes] = []
    # A y axis of any scale may write its multiplier (1e-10) over its top left corner, where
    # only Matplotlib's measured placement keeps a panel's title clear of it.
    with rc_context({"axes.titley": None} if any_scale_y else {}):
        for index in range(count):
            row, column = divmod(index, columns)
            shared = flat[0] if sharey and flat else None
            flat.append(fig.add_subplot(grid[row, column], sharey=shared))
            if sharey and column:
                flat[-1].yaxis.set_tick_params(labelleft=False)  # the row's first panel says them
    # The x axis's label goes below a tick mark, its gap and one line of tick labels, where
    # Matplotlib would put it after measuring every tick label once more. (The one panel with
    # slanted tick labels, categories, has no x label.)
    below = (
        rcParams["xtick.major.size"]
        + rcParams["xtick.major.pad"]
        + FontProperties(size=rcParams["xtick.labelsize"]).get_size_in_points()
        + rcParams["axes.labelpad"]
    ) / 72
    for ax in flat:
        under = ax.transAxes + ScaledTranslation(0, -below, fig.dpi_scale_trans)
        ax.xaxis.set_label_coords(0.5, 0, transform=under)
        ax.xaxis.set_major_locator(_ticks(integer=integer_x))
        ax.yaxis.set_major_locator(_ticks())
    return fig, flat


def _log_if_spread(ax: Axes, values: Iterable[float]) -> None:
    """A symmetric log scale (zero stays visible) when the positive values, a tolerance among
    them, span several decades, as errors far below their tolerance do."""
    positive = [value for value in values if value > 0]
    if positive and max(positive) / min(positive) > 100:
        from matplotlib.ticker import FuncFormatter, NullLocator

        linthresh = min(positive)
        ax.set_yscale("symlog", linthresh=linthresh)
        # Plain labels (1e-06) and no minor ticks: Matplotlib's 10^-6 goes through mathtext,
        # and ticks are most of a small figure's drawing time.
        locator = _in_view_locators()[1](linthresh=linthresh, base=10, subs=[1])
        ax.yaxis.set_major_locator(locator)
        ax.yaxis.set_major_formatter(
            FuncFormatter(lambda value, _: f"{value:.0e}" if value else "0")
        )
        ax.yaxis.set_minor_locator(NullLocator())


def _by_batch_and_length(
    points: Sequence[Mapping[str, Any]],
    key: str,
    ylabel: str,
    *,
    limit: float | None,
    limit_label: str,
    title: str,
    counts: bool = False,
) -> Figure | None:
    """``key`` against batch size and against length, one panel each (length when known)."""
    rows: list[tuple[int, int | None, float]] = []
    for point in points:
        if not isinstance(point, Mapping):
            continue
        batch, length, value = point.get("batch"), point.get("length"), _number(point.get(key))
        if isinstance(batch, int) and value is not None:
            rows.append((batch, length if isinstance(length, int) else None, value))
    if not rows:
        return None
    with_length = [(b, t, v) for b, t, v in rows if t is not None]
    panels = [("batch size", [(b, v, limit is not None and v > limit) for b, _, v in rows])]
    if with_length:
        panels.append(
            (
                "sequence length",
                [(t, v, limit is not None and v > limit) for _, t, v in with_length],
            )
        )
    fig, axes = _grid(len(panels), sharey=True, integer_x=True)
    for index, (ax, (xlabel, data)) in enumerate(zip(axes, panels, strict=True)):
        colours = [BAD if bad else GOOD for _, _, bad in data]
        ax.scatter([x for x, _, _ in data], [y for _, y, _ in data], c=colours, s=14, alpha=0.8)
        if limit is not None:
            ax.axhline(limit, color=THRESHOLD, linestyle="--", linewidth=1)
            above = all(y <= limit for _, y, _ in data)  # the label goes on the empty side
            ax.text(
                0.99,
                limit,
                limit_label,
                color=THRESHOLD,
                ha="right",
                va="top" if above and not counts else "bottom",
                transform=ax.get_yaxis_transform(),
                fontsize=7,
            )
        ax.set_xlabel(xlabel)
        if index == 0:
            if counts:
                ax.set_ylim(-0.1, max(1.0, *(y for _, _, y in rows)) * 1.3)
                ax.yaxis.set_major_locator(_ticks(integer=True))
            else:
                extra = [limit] if limit is not None else []
                _log_if_spread(ax, [y for _, _, y in rows] + extra)
            ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=9)
    return fig


def _plot_output_finite(check: Mapping[str, Any]) -> Figure | None:
    points = check["details"].get("points")
    if not isinstance(points, list):
        return None
    return _by_batch_and_length(
        points,
        "non_finite",
        "non-finite logits",
        limit=0.0,
        limit_label="any above 0 fails",
        counts=True,
        title=f"Non-finite logits by batch size and length ({len(points)} input shapes)",
    )


def _plot_batch_independence(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    points = details.get("points")
    if not isinstance(points, list):
        return None
    atol = _number(details.get("atol"))
    return _by_batch_and_length(
        points,
        "max_abs_diff",
        "max |alone - in batch|",
        limit=atol,
        limit_label=f"atol {atol:g}" if atol is not None else "",
        title=f"Batch-independence error by batch size and length ({len(points)} input shapes)",
    )


def _curve(ax: Axes, values: Sequence[float | None], *, start: int = 0, **style: Any) -> None:
    known = [(start + i, value) for i, value in enumerate(values) if value is not None]
    ax.plot([step for step, _ in known], [value for _, value in known], **style)


def _plot_overfit(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    losses = _losses(details.get("losses"))
    if not any(value is not None for value in losses):
        return None
    fig, (ax,) = _grid(1, cell=(5.0, 2.6), integer_x=True, any_scale_y=True)
    _curve(ax, losses, color=REFERENCE, marker="o", markersize=2.5, label="training loss")
    initial, ratio = _number(details.get("initial_loss")), _number(details.get("target_ratio"))
    if initial is not None and ratio is not None:
        ax.axhline(
            initial * ratio,
            color=THRESHOLD,
            linestyle="--",
            linewidth=1,
            label=f"target: {ratio:g} x initial loss",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(loc="best", fontsize=7)
    ax.set_title("Overfitting one batch: the loss curve")
    return fig


def _plot_training_run(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    history = details.get("history")
    if not isinstance(history, list) or not history:
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    initial = details.get("initial_eval")
    if isinstance(initial, Mapping) and _number(initial.get("loss")) is not None:
        series.setdefault("val/loss", []).append((0.0, float(initial["loss"])))
    for entry in history:
        if not isinstance(entry, Mapping):
            continue
        step = _number(entry.get("step"))
        for name in ("train/loss", "val/loss"):
            value = _number(entry.get(name))
            if step is not None and value is not None:
                series.setdefault(name, []).append((step, value))
    if not series:
        return None
    fig, (ax,) = _grid(1, cell=(5.0, 2.6), integer_x=True, any_scale_y=True)
    styles = {"train/loss": (REFERENCE, "o"), "val/loss": (CURRENT, "s")}
    for name, data in series.items():
        colour, marker = styles[name]
        ax.plot([x for x, _ in data], [y for _, y in data], label=name, color=colour, marker=marker)
    ax.set_xlabel("training step (validation at 0 is the untrained model)")
    ax.set_ylabel("loss")
    ax.legend(loc="best", fontsize=7)
    run = details.get("run_id")
    ax.set_title(f"Training run {run}: train and validation loss" if run else "Training run")
    return fig


def _plot_two_runs(
    check: Mapping[str, Any], first: str, second: str, labels: tuple[str, str], title: str
) -> Figure | None:
    details = check["details"]
    one, two = _losses(details.get(first)), _losses(details.get(second))
    if not one or not two:
        return None
    offset = len(one) - len(two)  # a resumed run covers the last steps of the straight one
    fig, (ax,) = _grid(1, cell=(5.0, 2.6), integer_x=True, any_scale_y=True)
    _curve(ax, one, color=REFERENCE, marker="o", markersize=3, label=labels[0])
    _curve(
        ax,
        two,
        start=max(offset, 0),
        color=CURRENT,
        marker="x",
        markersize=5,
        linestyle="--",
        label=labels[1],
    )
    divergent = details.get("divergent_steps")
    if isinstance(divergent, list) and divergent:
        for step in divergent:
            if isinstance(step, int):
                ax.axvline(step, color=THRESHOLD, alpha=0.4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title)
    return fig


def _plot_resume(check: Mapping[str, Any]) -> Figure | None:
    at = check["details"].get("resume_at")
    return _plot_two_runs(
        check,
        "losses_straight",
        "losses_resumed",
        ("straight run", f"resumed at step {at}"),
        "Resume equivalence: loss per step of both runs",
    )


def _plot_seed(check: Mapping[str, Any]) -> Figure | None:
    seed = check["details"].get("seed")
    return _plot_two_runs(
        check,
        "losses_first",
        "losses_second",
        (f"first run (seed {seed})", f"second run (seed {seed})"),
        "Seed reproducibility: loss per step of both runs",
    )


def _plot_parity(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    shapes = details.get("errors_by_shape")
    if not isinstance(shapes, list) or not shapes:
        return None
    tolerance = details.get("tolerance")
    atol = _number(tolerance.get("atol")) if isinstance(tolerance, Mapping) else None
    points = []
    for entry in shapes:
        if not isinstance(entry, Mapping):
            continue
        batch, length = batch_and_length(entry.get("input"))
        points.append({"batch": batch, "length": length, "max_abs_diff": entry.get("max_abs_diff")})
    label = details.get("format") or _param(check["check_name"]) or "artifact"
    return _by_batch_and_length(
        points,
        "max_abs_diff",
        "max |artifact - eager|",
        limit=atol,
        limit_label=f"atol {atol:g}" if atol is not None else "",
        title=f"{label} parity error by input shape ({len(points)} shapes)",
    )


def _bars(
    ax: Axes, xs: Sequence[float], heights: Sequence[float], width: float, **style: Any
) -> None:
    """One series of bars as one artist: ``Axes.bar`` makes a patch of each bar, each as
    costly to lay out and draw as the whole series is as one collection."""
    from matplotlib.collections import PolyCollection

    half = width / 2
    corners = [
        [(x - half, 0.0), (x - half, height), (x + half, height), (x + half, 0.0)]
        for x, height in zip(xs, heights, strict=True)
    ]
    bars = PolyCollection(corners, linewidth=0, **style)
    bars.sticky_edges.y.append(0.0)  # the axis starts at 0, as under Axes.bar
    ax.add_collection(bars)


def _plot_latency(check: Mapping[str, Any]) -> Figure | None:
    shapes = check["details"].get("shapes")
    if not isinstance(shapes, Mapping) or not shapes:
        return None
    labels = list(shapes)
    formats = list(
        dict.fromkeys(
            fmt for timings in shapes.values() if isinstance(timings, Mapping) for fmt in timings
        )
    )
    if not formats:
        return None
    fig, (ax,) = _grid(1, cell=(5.6, 2.8))
    width = 0.8 / len(formats)
    for index, fmt in enumerate(formats):
        heights = []
        for label in labels:
            timing = shapes[label].get(fmt) if isinstance(shapes[label], Mapping) else None
            median = _number(timing.get("median_ms")) if isinstance(timing, Mapping) else None
            heights.append(median if median is not None else 0.0)
        xs = [i + (index - (len(formats) - 1) / 2) * width for i in range(len(labels))]
        _bars(ax, xs, heights, width, color=f"C{index}", label=fmt)
    budget = _number(check["details"].get("budget_ms"))
    if budget is not None:
        ax.axhline(
            budget, color=THRESHOLD, linestyle="--", linewidth=1, label=f"budget {budget:g} ms"
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("median latency (ms)")
    ax.legend(loc="best", fontsize=7)
    ax.set_title("Latency by input shape and format")
    return fig


def _plot_drift(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    signals = details.get("signals")
    distributions = details.get("distributions")
    if not isinstance(signals, list) or not isinstance(distributions, Mapping):
        return None
    drawn = [s for s in signals if isinstance(s, Mapping) and s.get("name") in distributions]
    if not drawn:
        return None
    categorical = any(distributions[s["name"]].get("kind") != "numeric" for s in drawn)
    bottom = 0.9 if categorical else _MARGINS["bottom"]
    fig, axes = _grid(len(drawn), bottom=bottom, top=0.75)
    for ax, signal in zip(axes, drawn, strict=True):
        data = distributions[signal["name"]]
        reference, current = data.get("reference") or [], data.get("current") or []
        if data.get("kind") == "numeric":
            edges = data.get("edges") or []
            if len(edges) == len(reference) + 1 == len(current) + 1:
                ax.stairs(reference, edges, color=REFERENCE, label="reference", linewidth=1.2)
                ax.stairs(current, edges, color=CURRENT, label="current", linewidth=1.2)
            ax.set_ylabel("share of values")
        else:
            labels = [str(label) for label in data.get("labels") or []]
            xs = range(len(labels))
            _bars(ax, [x - 0.2 for x in xs], reference, 0.4, color=REFERENCE, label="reference")
            _bars(ax, [x + 0.2 for x in xs], current, 0.4, color=CURRENT, label="current")
            ax.set_xticks(list(xs), labels, rotation=60, fontsize=6)
            ax.set_ylabel("share")
        statistic, threshold = _number(signal.get("statistic")), _number(signal.get("threshold"))
        p_value = _number(signal.get("p_value"))
        measure = signal.get("method", "statistic")
        shown = f"{measure} {'n/a' if statistic is None else f'{statistic:.3g}'}"
        if p_value is not None:
            shown += f", p-value {p_value:.2g}"
        if threshold is not None:
            shown += f" vs threshold {threshold:.3g}"
        verdict = "DRIFT" if signal.get("drifted") else "no drift"
        ax.set_title(
            f"{signal['name']}: {verdict}\n{shown}",
            fontsize=8,
            color=BAD if signal.get("drifted") else "black",
        )
        ax.legend(loc="best", fontsize=6)
    what = "input" if _base_name(check["check_name"]) == "test_input_drift" else "prediction"
    fig.suptitle(f"{what.capitalize()} drift: reference against current data", fontsize=9)
    return fig


def _plot_triggers(check: Mapping[str, Any]) -> Figure | None:
    details = check["details"]
    triggers = details.get("trigger_details")
    if not isinstance(triggers, list):
        return None
    history = details.get("history")
    drawn: list[tuple[Mapping[str, Any], list[float], float | None]] = []
    for trigger in triggers:
        if not isinstance(trigger, Mapping):
            continue
        past = history.get(trigger.get("trigger_name"), []) if isinstance(history, Mapping) else []
        earlier = [_number(p.get("value")) for p in past if isinstance(p, Mapping)]
        values = [value for value in earlier if value is not None]
        current = _number(trigger.get("actual_value"))
        if values or current is not None:
            drawn.append((trigger, values, current))
    if not drawn:
        return None
    fig, axes = _grid(len(drawn), integer_x=True, any_scale_y=True)
    for ax, (trigger, values, current) in zip(axes, drawn, strict=True):
        if values:
            line = values + ([current] if current is not None else [])
            ax.plot(
                range(len(line)),
                line,
                color=REFERENCE,
                marker="o",
                markersize=3,
                label="earlier checks",
            )
        if current is not None:
            ax.scatter(
                [len(values)],
                [current],
                color=BAD if trigger.get("triggered") else GOOD,
                zorder=3,
                s=24,
                label="this session",
            )
        threshold = _number(trigger.get("threshold"))
        if threshold is not None:
            ax.axhline(
                threshold,
                color=THRESHOLD,
                linestyle="--",
                linewidth=1,
                label=f"threshold {threshold:g}",
            )
        ax.set_xlabel("trigger check (oldest first; the last is this session)")
        metrics = trigger.get("metrics")
        name = metrics.get("metric_name") if isinstance(metrics, Mapping) else None
        ax.set_ylabel(str(name or trigger.get("kind") or "value"))
        state = "FIRED" if trigger.get("triggered") else str(trigger.get("status") or "")
        ax.set_title(f"{trigger.get('trigger_name')}: {state}", fontsize=8)
        ax.legend(loc="best", fontsize=6)
    fig.suptitle("Retraining triggers: the measured value of each check", fontsize=9)
    return fig


def _plot_attention_health(check: Mapping[str, Any]) -> Figure | None:
    """Each head's normalised attention entropy, layer by layer: 0 attends to one key, 1 to
    all keys evenly; dead and one-key heads are the extremes the check looks for."""
    layers = check["details"].get("layers")
    if not isinstance(layers, list):
        return None
    rows: list[tuple[str, list[float | None]]] = []
    for layer in layers:
        if isinstance(layer, Mapping) and isinstance(layer.get("heads"), list):
            heads = [h for h in layer["heads"] if isinstance(h, Mapping)]
            name = str(layer.get("layer")).split(" (", 1)[0]  # "layer 0 (blocks.0.attn)"
            rows.append((name, [_number(h.get("normalized_entropy")) for h in heads]))
    if not rows or not any(value is not None for _, values in rows for value in values):
        return None
    width = max(len(values) for _, values in rows)
    fig, (ax,) = _grid(1, cell=(max(3.0, 0.5 * width + 2.5), max(1.6, 0.35 * len(rows) + 1.2)))
    grid = [
        [value if value is not None else float("nan") for value in values]
        + [float("nan")] * (width - len(values))
        for _, values in rows
    ]
    ax.pcolormesh(grid, cmap="viridis", vmin=0.0, vmax=1.0, edgecolors="white")
    for y, values in enumerate(grid):
        for x, value in enumerate(values):
            if value == value:  # not NaN
                colour = "white" if value < 0.6 else "black"
                ax.text(
                    x + 0.5,
                    y + 0.5,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color=colour,
                )
    ax.set_xticks([x + 0.5 for x in range(width)], [str(x) for x in range(width)])
    ax.set_yticks([y + 0.5 for y in range(len(rows))], [name for name, _ in rows])
    ax.set_xlabel("head")
    ax.grid(False)
    ax.set_title("Attention entropy per head (0: one key, 1: uniform)")
    return fig


#: The checks that have a plot, by name without the parameter (``test_export_parity[onnx]``).
PLOTTERS: dict[str, Callable[[Mapping[str, Any]], Figure | None]] = {
    "test_output_finite": _plot_output_finite,
    "test_batch_independence": _plot_batch_independence,
    "test_overfit_single_batch": _plot_overfit,
    "test_training_run": _plot_training_run,
    "test_resume_equivalence": _plot_resume,
    "test_seed_reproducibility": _plot_seed,
    "test_export_parity": _plot_parity,
    "test_quantized_parity": _plot_parity,
    "test_export_latency": _plot_latency,
    "test_input_drift": _plot_drift,
    "test_prediction_drift": _plot_drift,
    "test_retraining_triggers": _plot_triggers,
    "test_attention_health": _plot_attention_health,
}


def plot_worthy(check: Mapping[str, Any]) -> bool:
    """True for a check of a kind that has a plot (whether its details hold the data or not)."""
    return _base_name(str(check.get("check_name", ""))) in PLOTTERS


# --------------------------------------------------------------------------- SVG


#: Group ids name Matplotlib's artists; nothing refers to them, so they are dropped.
_GROUP_ID = re.compile(r'<g id="[^"]*"')
#: How Matplotlib's SVG names an id where it defines one and where it refers to one.
_ID_SPELLINGS = (' id="', "url(#", 'href="#')


def svg_of(fig: Figure, *, prefix: str | None = None) -> str:
    """The figure as an ``<svg>`` element: no XML prologue, no metadata, and, with ``prefix``,
    every id prefixed so that several drawings can live in one HTML page."""
    from matplotlib import rc_context

    with rc_context(_RC):
        return _svg_element(fig, prefix)


def _svg_element(fig: Figure, prefix: str | None) -> str:
    """``svg_of`` under ``_RC`` already. Mostly plain string operations: a regular expression
    scanning the whole drawing costs about as much as drawing a panel."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if 0 <= start < end:
        text = text[:start] + text[end + len("</metadata>") :]
    lines = (line.strip() for line in _GROUP_ID.sub("<g", text).split("\n"))
    text = " ".join(line for line in lines if line).replace("> <", "><")
    for spelling in _ID_SPELLINGS if prefix else ():
        text = text.replace(spelling, f"{spelling}{prefix}-")
    return text + "\n"


def _key(check: Mapping[str, Any]) -> str:
    parts = [f"tier{check['tier']}", str(check["check_name"])]
    if check.get("model"):
        parts.append(str(check["model"]))
    return re.sub(r"[^A-Za-z0-9_.]+", "-", "-".join(parts)).strip("-")


def draw_check(check: Mapping[str, Any]) -> Plot | None:
    """The plot of one check (a ``CheckResult.to_dict()``), or None when it has none."""
    plotter = PLOTTERS.get(_base_name(str(check.get("check_name", ""))))
    if plotter is None or not isinstance(check.get("details"), Mapping):
        return None
    from matplotlib import rc_context

    with rc_context(_RC), warnings.catch_warnings():
        # Layout advice (a crowded legend, a tight layout) is Matplotlib's business, not the
        # user's: under ``filterwarnings = error`` it would cost the whole report.
        warnings.filterwarnings("ignore", category=UserWarning, module="matplotlib")
        fig = plotter(check)
        if fig is None:
            return None
        key = _key(check)
        svg = _svg_element(fig, key)
    title = f"{check['check_name']}" + (f" ({check['model']})" if check.get("model") else "")
    return Plot(
        key=key,
        title=title,
        check_name=str(check["check_name"]),
        tier=int(check["tier"]),
        model=check.get("model"),
        svg=svg,
    )


def draw_checks(checks: Iterable[Mapping[str, Any]]) -> list[Plot]:
    """The plots of every check that has one, in the order given."""
    plots = []
    for check in checks:
        plot = draw_check(check)
        if plot is not None:
            plots.append(plot)
    return plots
