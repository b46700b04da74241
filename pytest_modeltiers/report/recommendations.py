"""Recommendations: one per failed, errored or warned check, with a hint on where to look.

PYTEST_DONT_REWRITE

A report that only says "test_gradient_flow failed" sends the reader to the docs; the hint says
where such a bug usually hides. Hints are keyed by the built-in check names, with a
parametrisation suffix ignored (``test_export[onnx]`` -> ``test_export``). Other checks, including
users' own tier-marked tests, get a generic hint. An errored check gets the "it did not complete"
hint whatever its name: the check-specific advice is about a result that was never produced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytest_modeltiers.report.check_result import CheckResult, CheckStatus

__all__ = ["HINTS", "build_recommendations", "hint_for"]

#: Remediation hints keyed by built-in check name.
HINTS: dict[str, str] = {
    "test_shape_robustness": (
        "check forward for hard-coded batch or sequence sizes (view/reshape with literal "
        "numbers, positional tables shorter than max_seq_len) and that the output head matches "
        "the task contract"
    ),
    "test_output_finite": (
        "look for division by zero, log or sqrt of non-positive values, softmax over a fully "
        "masked row, or embeddings indexed past the vocabulary; compute these in float32"
    ),
    "test_gradient_flow": (
        "look for parameters unused in forward or detached tensors (.detach(), .data, "
        "torch.no_grad, .item() in the graph); dead gradients point at saturated activations "
        "or zero multipliers, NaN gradients at unstable operations"
    ),
    "test_output_stability": (
        "in eval mode, look for dropout or sampling left active (F.dropout without "
        "training=self.training, torch.rand in forward); collapsed outputs point at a dead head "
        "or a constant input path, exploding ones at missing normalisation"
    ),
    "test_batch_independence": (
        "look for operations that mix samples: BatchNorm in training statistics, reductions or "
        "softmax over the batch dimension, reshapes that move the batch axis"
    ),
    "test_causal_masking": (
        "apply a causal (lower-triangular) attention mask in every attention layer, and make "
        "sure convolutions and poolings over time do not look ahead"
    ),
    "test_padding_invariance": (
        "pass attention_mask to every attention layer and use it in pooling (mask padded "
        "positions before a mean or max)"
    ),
    "test_input_immutability": (
        "replace in-place operations on inputs (x += ..., x.mul_(), masked_fill_) with their "
        "out-of-place forms, or clone the input first"
    ),
    "test_parameter_initialization": (
        "initialise weights with a scaled scheme (nn.init.xavier_uniform_, kaiming_normal_, or "
        "the module defaults); check custom init code for NaN, constant or huge values"
    ),
    "test_memory_footprint": (
        "reduce the model or activation size (smaller hidden sizes, activation checkpointing, "
        "lower precision) or raise the memory budget if the growth is expected"
    ),
    "test_memory_retention": (
        "keep only what you need between calls, detached (.detach()) and in a bounded container; "
        "look for lists or dicts that forward appends outputs, activations or losses to, and for "
        "caches keyed by something that changes every call"
    ),
    "test_inference_speed": (
        "profile forward (torch.profiler) for Python loops over tokens, CPU-GPU copies and "
        "redundant recomputation, or raise the latency budget if the cost is expected"
    ),
}

GENERIC_HINT = "read the check's message and details, fix the model, and rerun the check"


def _base_name(check_name: str) -> str:
    return check_name.split("[", 1)[0]


def hint_for(result: CheckResult) -> str:
    """The remediation hint for one non-passing result."""
    if result.status is CheckStatus.ERROR:
        where = f"`pytest {result.nodeid!s}`" if result.nodeid else "the check"
        return (
            f"the check did not complete (it raised, timed out or its worker crashed): rerun "
            f"{where} and read the traceback"
        )
    return HINTS.get(_base_name(result.check_name), GENERIC_HINT)


_SEVERITY = {CheckStatus.ERROR: 0, CheckStatus.FAILED: 1, CheckStatus.WARNING: 2}


def build_recommendations(results: Iterable[CheckResult]) -> list[dict[str, Any]]:
    """One recommendation per error, failure and warning: errors first, then failures, then
    warnings, each group in the report's canonical check order."""
    flagged = [result for result in results if result.status in _SEVERITY]
    flagged.sort(key=lambda result: (_SEVERITY[result.status], result.sort_key()))
    return [
        {
            "check_name": result.check_name,
            "tier": result.tier,
            "status": result.status.value,
            "model": result.model,
            "nodeid": result.nodeid,
            "message": result.message,
            "hint": hint_for(result),
        }
        for result in flagged
    ]
