"""Parity tolerances per export format and output dtype: defaults, pyproject.toml, options.

PYTEST_DONT_REWRITE

An element of an artifact's output passes when ``|artifact - eager| <= atol + rtol * |eager|``
(``torch.testing.assert_close`` semantics); a comparison passes when at most
``max_mismatch_fraction`` of the elements fail (default 0: every element must pass).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.export.formats import FORMATS

__all__ = [
    "DEFAULTS",
    "DTYPES",
    "QUANTIZED",
    "Tolerance",
    "ToleranceError",
    "ToleranceTable",
    "load_pyproject_tolerances",
    "parse_tolerance",
]

QUANTIZED = "quantized"
DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")
_FIELDS: tuple[str, ...] = ("atol", "rtol", "max_mismatch_fraction", "min_top1_agreement")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ToleranceError(ModelTiersError, ValueError):
    """A tolerance setting is malformed; the message names where and the accepted form."""


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's output must be to eager PyTorch, and where that was decided."""

    atol: float
    rtol: float
    max_mismatch_fraction: float = 0.0
    min_top1_agreement: float | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ToleranceError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("max_mismatch_fraction", "min_top1_agreement"):
            value = getattr(self, name)
            if value is None and name == "min_top1_agreement":
                continue
            if not _is_number(value) or not 0 <= value <= 1:
                raise ToleranceError(f"{name} must be a number from 0 to 1, got {value!r}")

    def describe(self) -> str:
        """``"atol=0.0001, rtol=0.001"`` plus the non-default extras, and the source."""
        text = f"atol={self.atol:g}, rtol={self.rtol:g}"
        if self.max_mismatch_fraction:
            text += f", max_mismatch_fraction={self.max_mismatch_fraction:g}"
        if self.min_top1_agreement is not None:
            text += f", min_top1_agreement={self.min_top1_agreement:g}"
        return f"{text} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "max_mismatch_fraction": self.max_mismatch_fraction,
            "min_top1_agreement": self.min_top1_agreement,
            "source": self.source,
        }


DEFAULTS: dict[str, Tolerance] = {
    "onnx": Tolerance(1e-4, 1e-3),
    "torch_export": Tolerance(1e-5, 1e-5),
    "torchscript": Tolerance(1e-5, 1e-5),
    "pytorch": Tolerance(1e-5, 1.3e-6),
    QUANTIZED: Tolerance(0.1, 0.1, max_mismatch_fraction=0.01, min_top1_agreement=0.9),
}
#: torch.testing's defaults for low-precision outputs: a floor under every format's default.
_DTYPE_FLOORS: dict[str, tuple[float, float]] = {
    "float16": (1e-5, 1e-3),
    "bfloat16": (1e-5, 1.6e-2),
}


def _split_key(key: str, where: str) -> tuple[str, str | None]:
    """``"onnx.float16"`` -> ``("onnx", "float16")``, checked against the known names."""
    name, _, dtype = key.partition(".")
    known = [*FORMATS, QUANTIZED]
    prefix = f"{where}: " if where else ""
    if name not in known:
        raise ToleranceError(
            f"{prefix}unknown format {name!r} in {key!r}; use one of {', '.join(known)}, "
            f"optionally with a dtype ({', '.join(DTYPES)}), e.g. onnx.float16"
        )
    if dtype and dtype not in DTYPES:
        raise ToleranceError(
            f"{prefix}unknown dtype {dtype!r} in {key!r}; use one of {', '.join(DTYPES)}"
        )
    return name, dtype or None


def parse_tolerance(value: str) -> tuple[str, dict[str, float]]:
    """``"onnx=1e-3,1e-2[,0.01[,0.9]]"`` -> ``("onnx", {"atol": ..., "rtol": ..., ...})``.

    The numbers are atol, rtol, then optionally max_mismatch_fraction and min_top1_agreement.
    """
    form = "FORMAT[.DTYPE]=ATOL,RTOL[,MAX_MISMATCH_FRACTION[,MIN_TOP1_AGREEMENT]]"
    key, sep, numbers = value.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ToleranceError(f"expected {form} (e.g. onnx=1e-4,1e-3), got {value!r}")
    _split_key(key, "")
    parts = [part.strip() for part in numbers.split(",")]
    if not 2 <= len(parts) <= 4:
        raise ToleranceError(f"expected {form} (e.g. onnx=1e-4,1e-3), got {value!r}")
    try:
        floats = [float(part) for part in parts]
    except ValueError:
        raise ToleranceError(f"expected numbers after '=' in {value!r}; form: {form}") from None
    override = dict(zip(_FIELDS, floats, strict=False))
    _validated(override, "")
    return key, override


def _validated(override: Mapping[str, Any], where: str) -> dict[str, float]:
    """Check one override by building a tolerance from it (the checks live in ``Tolerance``)."""
    prefix = f"{where}: " if where else ""
    unknown = [key for key in override if key not in _FIELDS]
    if unknown:
        raise ToleranceError(
            f"{prefix}unknown key(s) {', '.join(map(str, unknown))}; accepted: {', '.join(_FIELDS)}"
        )
    try:
        replace(Tolerance(0.0, 0.0), **override)
    except (ToleranceError, TypeError) as exc:
        raise ToleranceError(f"{prefix}{exc}") from None
    return dict(override)


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ToleranceError(
                f"{path} has [tool.modeltiers.tolerance] but Python 3.10 cannot read TOML "
                "without the tomli package: pip install tomli, or use --export-tolerance"
            ) from None
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except (OSError, ValueError) as exc:
        raise ToleranceError(f"cannot read {path}: {exc}") from None
    return data


def load_pyproject_tolerances(rootdir: Path) -> dict[str, dict[str, float]]:
    """The ``[tool.modeltiers.tolerance]`` overrides of ``rootdir/pyproject.toml`` ({} if none)."""
    path = rootdir / "pyproject.toml"
    if not path.is_file():
        return {}
    if sys.version_info < (3, 11) and b"modeltiers" not in path.read_bytes():  # pragma: no cover
        return {}
    table = _read_toml(path).get("tool", {}).get("modeltiers", {}).get("tolerance", {})
    where = f"{path} [tool.modeltiers.tolerance]"
    if not isinstance(table, Mapping):
        raise ToleranceError(f"{where} must be a table of formats")
    overrides: dict[str, dict[str, float]] = {}
    for key, value in table.items():
        _split_key(str(key), where)
        if not isinstance(value, Mapping):
            raise ToleranceError(
                f"{where}: {key} must be a table such as {{ atol = 1e-4, rtol = 1e-3 }}, "
                f"got {value!r}"
            )
        flat = {k: v for k, v in value.items() if not isinstance(v, Mapping)}
        overrides[str(key)] = _validated(flat, f"{where} {key}")
        for dtype, nested in value.items():
            if isinstance(nested, Mapping):
                nested_key = f"{key}.{dtype}"
                _split_key(nested_key, where)
                overrides[nested_key] = _validated(nested, f"{where} {nested_key}")
    return overrides


@dataclass(frozen=True)
class ToleranceTable:
    """Defaults plus the ``pyproject.toml`` and option overrides; ``get`` resolves one."""

    pyproject: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    pyproject_path: str = "pyproject.toml"

    @classmethod
    def from_sources(
        cls, rootdir: Path | None, option_values: Iterable[str] = ()
    ) -> ToleranceTable:
        """Read ``rootdir/pyproject.toml`` and parse ``--export-tolerance`` values."""
        pyproject = load_pyproject_tolerances(rootdir) if rootdir is not None else {}
        options: dict[str, dict[str, float]] = {}
        for value in option_values:
            key, override = parse_tolerance(value)
            options.setdefault(key, {}).update(override)
        path = str(rootdir / "pyproject.toml") if rootdir is not None else "pyproject.toml"
        return cls(pyproject=pyproject, options=options, pyproject_path=path)

    def get(self, name: str, dtype: str = "float32") -> Tolerance:
        """The tolerance for format ``name`` (or ``quantized``) and output ``dtype``."""
        _split_key(name, "tolerance")
        base = DEFAULTS[name]
        if dtype in _DTYPE_FLOORS:
            atol, rtol = _DTYPE_FLOORS[dtype]
            base = replace(
                base,
                atol=max(base.atol, atol),
                rtol=max(base.rtol, rtol),
                source=f"default for {dtype}",
            )
        layers = (
            (self.pyproject, f"{self.pyproject_path} [tool.modeltiers.tolerance]"),
            (self.options, "--export-tolerance"),
        )
        for overrides, where in layers:
            for key in (name, f"{name}.{dtype}"):
                if key in overrides:
                    base = replace(base, **overrides[key], source=f"{where} {key}")
        return base
