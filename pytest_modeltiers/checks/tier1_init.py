"""Tier 1 parameter-initialisation check (``test_parameter_initialization``): what is wrong
fails, what is merely unusual warns.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_modeltiers.report import CheckResult

__all__ = ["check_parameter_initialization"]

CHECK = "test_parameter_initialization"
TIER = 1

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    nn.RMSNorm,
)
_FAN_IN_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
_LOOKUP_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
_MIN_STAT_NUMEL = 16
_MAX_LISTED = 8


@dataclass(frozen=True)
class _Stats:
    name: str
    shape: list[int]
    mean: float
    std: float
    max_abs: float
    fan_in: int | None

    @property
    def gain(self) -> float | None:
        return None if self.fan_in is None else self.std * math.sqrt(self.fan_in)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "shape": self.shape,
            "mean": self.mean,
            "std": self.std,
            "max_abs": self.max_abs,
        }
        if self.fan_in is not None:
            out["fan_in"] = self.fan_in
            out["gain"] = self.gain
        return out


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def _fan_in(module: nn.Module, local: str, param: torch.Tensor) -> int | None:
    """Inputs summed per output value of the layer owning ``param``; ``None`` for no product.

    Follows ``torch.nn.init``'s convention (``shape[1] * receptive field``), except for Hugging
    Face's ``Conv1D``, which stores its weight transposed (``[in, out]``).
    """
    if param.dim() < 2:
        return None
    if type(module).__name__ == "Conv1D":
        if local == "weight" and getattr(module, "nf", None) == param.shape[1]:
            return int(param.shape[0])
        return None
    if isinstance(module, nn.MultiheadAttention):
        if not local.endswith("proj_weight"):
            return None
    elif not (isinstance(module, _FAN_IN_TYPES) and local == "weight"):
        return None
    receptive = int(math.prod(param.shape[2:])) if param.dim() > 2 else 1
    return int(param.shape[1]) * receptive


def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Parameter name -> (owning module, local name), first owner of shared parameters."""
    owners: dict[str, tuple[nn.Module, str]] = {}
    for module_name, module in model.named_modules():
        for local, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{local}" if module_name else local
            owners.setdefault(full, (module, local))
    return owners


def _readable(tensor: torch.Tensor) -> bool:
    return not (tensor.is_meta or isinstance(tensor, nn.parameter.UninitializedParameter))


def _real_view(tensor: torch.Tensor) -> torch.Tensor:
    data = tensor.detach()
    return torch.view_as_real(data) if data.is_complex() else data


def _nonfinite(name: str, kind: str, tensor: torch.Tensor) -> dict[str, Any] | None:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    data = _real_view(tensor)
    finite = torch.isfinite(data)
    if bool(finite.all()):
        return None
    nan = int(torch.isnan(data).sum())
    return {
        "name": name,
        "kind": kind,
        "shape": list(tensor.shape),
        "nan": nan,
        "inf": int((~finite).sum()) - nan,
        "numel": tensor.numel(),
    }


def _stats(name: str, tensor: torch.Tensor, fan_in: int | None) -> _Stats:
    data = _real_view(tensor).double()
    std, mean = torch.std_mean(data, correction=0)
    return _Stats(
        name=name,
        shape=list(tensor.shape),
        mean=float(mean),
        std=float(std),
        max_abs=float(data.abs().max()) if data.numel() else 0.0,
        fan_in=fan_in,
    )


def _names(items: list[dict[str, Any]]) -> str:
    shown = ", ".join(str(item["name"]) for item in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def check_parameter_initialization(
    model: nn.Module,
    *,
    max_std: float = 2.0,
    max_gain: float = 100.0,
    warn_gain: float = 10.0,
    min_gain: float = 1e-2,
    min_std: float = 1e-3,
    max_mean_ratio: float = 1.0,
    exempt: Iterable[str] = (),
) -> CheckResult:
    """Judge the model's parameters as initialised: NaN/Inf and extreme spreads fail, oddities warn.

    ``exempt`` holds ``fnmatch`` patterns of parameter names (``"*.lora_B.weight"``) excluded
    from the spread and statistics rules, for deliberate choices that would otherwise warn; NaN
    and Inf are never exempt. Read-only:
    nothing on the model changes.
    """
    start = time.perf_counter()
    patterns = tuple(exempt)
    owners = _owners(model)
    nonfinite: list[dict[str, Any]] = []
    extreme: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    unreadable: list[str] = []
    checked = exempted = 0

    with torch.no_grad():
        for name, param in model.named_parameters():
            if not _readable(param):
                unreadable.append(name)
                continue
            checked += 1
            bad = _nonfinite(name, "parameter", param)
            if bad is not None:
                nonfinite.append(bad)
                continue
            module, local = owners.get(name, (model, name))
            if (
                param.dim() < 2
                or _is_norm(module)
                or any(fnmatch.fnmatchcase(name, p) for p in patterns)
            ):
                exempted += 1
                continue
            fan_in = None if isinstance(module, _LOOKUP_TYPES) else _fan_in(module, local, param)
            stats = _stats(name, param, fan_in)
            reasons = _failure_reasons(stats, max_std, max_gain)
            if reasons:
                extreme.append({**stats.describe(), "reasons": reasons})
                continue
            note = _warning_reason(
                stats, param.numel(), warn_gain, min_gain, min_std, max_mean_ratio
            )
            if note is not None:
                warnings.append({**stats.describe(), "reason": note})
        buffers = 0
        for name, buffer in model.named_buffers():
            if not _readable(buffer):
                unreadable.append(name)
                continue
            buffers += 1
            bad = _nonfinite(name, "buffer", buffer)
            if bad is not None:
                nonfinite.append(bad)

    thresholds = {
        "max_std": max_std,
        "max_gain": max_gain,
        "warn_gain": warn_gain,
        "min_gain": min_gain,
        "min_std": min_std,
        "max_mean_ratio": max_mean_ratio,
        "exempt_patterns": list(patterns),
    }
    details: dict[str, Any] = {
        "checked_parameters": checked,
        "checked_buffers": buffers,
        "exempt_parameters": exempted,
        "nonfinite": nonfinite,
        "extreme_spread": extreme,
        "warnings": warnings,
        "thresholds": thresholds,
    }
    if unreadable:
        details["unreadable"] = unreadable
    duration = max(0.0, time.perf_counter() - start)
    warning_text = _warning_text(warnings)

    problems: list[str] = []
    if nonfinite:
        listed = "; ".join(
            f"{item['kind']} {item['name']} {item['shape']} ({item['nan']} NaN, {item['inf']} "
            f"Inf of {item['numel']})"
            for item in nonfinite[:_MAX_LISTED]
        )
        problems.append(
            f"{len(nonfinite)} tensor(s) hold NaN/Inf: {listed}. Likely cause: an init that "
            "divides by zero or takes log/sqrt of 0 or of a negative number, or a corrupt "
            "checkpoint; every forward pass through them is NaN."
        )
    if extreme:
        listed = "; ".join(
            f"{item['name']} {item['shape']} ({', '.join(item['reasons'])})"
            for item in extreme[:_MAX_LISTED]
        )
        problems.append(
            f"{len(extreme)} weight matrix(es) have an extreme spread: {listed}. Activations "
            "through them blow up (the gain std*sqrt(fan_in) is the output std for unit "
            "inputs; variance-preserving inits keep it near 1). Fix: initialise with "
            "nn.init.kaiming_uniform_/xavier_uniform_, or normal_(std=0.02), or scale random "
            "weights by 1/sqrt(fan_in)."
        )
    if problems:
        message = "parameter initialisation is broken: " + " ".join(problems)
        if warning_text:
            message += " Also: " + warning_text
        return CheckResult.failed(CHECK, TIER, message, details, duration_seconds=duration)
    if warnings:
        return CheckResult.warning(
            CHECK,
            TIER,
            warning_text + " These can be deliberate; exempt them with "
            "check_parameter_initialization(exempt=[pattern]) if so.",
            details,
            duration_seconds=duration,
        )
    return CheckResult.passed(
        CHECK,
        TIER,
        f"{checked} parameters and {buffers} buffers are finite; no weight matrix has an "
        f"extreme or suspicious spread ({exempted} biases/norm/1-D parameters exempt).",
        details,
        duration_seconds=duration,
    )


def _failure_reasons(stats: _Stats, max_std: float, max_gain: float) -> list[str]:
    reasons = []
    if stats.std > max_std:
        reasons.append(f"std {stats.std:.3g} > max_std {max_std:g}")
    gain = stats.gain
    if gain is not None and gain > max_gain:
        reasons.append(f"gain std*sqrt(fan_in={stats.fan_in}) = {gain:.3g} > max_gain {max_gain:g}")
    return reasons


def _warning_reason(
    stats: _Stats,
    numel: int,
    warn_gain: float,
    min_gain: float,
    min_std: float,
    max_mean_ratio: float,
) -> str | None:
    if stats.max_abs == 0.0:
        return "all zero (zero-initialised)"
    if stats.std == 0.0:
        if numel >= 2:
            return (
                f"constant {stats.mean:.3g}: every unit computes the same thing, so symmetry "
                "is never broken"
            )
        return None
    gain = stats.gain
    if gain is not None and gain > warn_gain:
        return (
            f"gain std*sqrt(fan_in={stats.fan_in}) = {gain:.3g} > {warn_gain:g}: amplifies "
            "activations (fine for an output head, a bug elsewhere)"
        )
    if gain is not None and gain < min_gain:
        return (
            f"gain std*sqrt(fan_in={stats.fan_in}) = {gain:.3g} < {min_gain:g}: shrinks "
            "activations to almost nothing"
        )
    if gain is None and stats.std < min_std:
        return f"std {stats.std:.3g} < {min_std:g}: nearly constant"
    if numel >= _MIN_STAT_NUMEL and abs(stats.mean) > max_mean_ratio * stats.std:
        return (
            f"|mean| {abs(stats.mean):.3g} > {max_mean_ratio:g} x std {stats.std:.3g}: all "
            "weights share a sign (torch.rand where torch.randn was meant?)"
        )
    return None


def _warning_text(warnings: list[dict[str, Any]]) -> str:
    if not warnings:
        return ""
    listed = "; ".join(f"{w['name']} {w['shape']}: {w['reason']}" for w in warnings[:_MAX_LISTED])
    more = f"; and {len(warnings) - _MAX_LISTED} more" if len(warnings) > _MAX_LISTED else ""
    return f"{len(warnings)} weight matrix(es) look unusual: {listed}{more}."
