"""What ``run_training`` returns (the evaluation, the history, the checkpoints, the run id),
and what it raises when training stops being finite.

PYTEST_DONT_REWRITE

``TrainingResults`` is a frozen dataclass that also reads like a dict
(``results["eval_summary"]``, the form older callers use), and ``to_dict()`` gives
everything but the model as strict JSON values (what ``modeltiers train`` prints). It has
no Lightning or torch import, so the tier 3 check and the CLI can handle results without
paying for either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.jsonio import jsonable

__all__ = ["NonFiniteTrainingError", "TrainingResults"]


class NonFiniteTrainingError(ModelTiersError):
    """Training produced a non-finite loss or gradient; the run stopped before that step.

    ``diagnosis`` says where: ``step`` (optimizer steps completed before it), ``epoch``,
    ``batch``, ``loss`` (a float, maybe NaN), ``parameter`` (the first, in
    ``named_parameters`` order, whose gradient is not finite; None if none is),
    ``non_finite_gradients`` and ``parameters_with_gradients`` (counts), and
    ``non_finite_weights`` (the first parameter that is itself already non-finite, or None).
    ``recorded_in`` names the experiment database run that stores it, when there is one.
    """

    def __init__(self, message: str, diagnosis: dict[str, Any]) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.recorded_in: str | None = None


@dataclass(frozen=True)
class TrainingResults(Mapping[str, Any]):
    """One finished run of ``run_training``, as seen from this process (``rank``).

    - ``eval_summary``: metrics of the trained model on the validation data (``loss``;
      ``perplexity`` for token tasks; ``accuracy`` where defined; ``examples``; ``split``).
    - ``initial_eval``: the same metrics before training (after loading the checkpoint when
      resuming), or None when ``eval_on_start`` is off.
    - ``history``: one dict per epoch: ``epoch`` (0-based, as Lightning counts), ``step``
      (optimizer steps so far), ``train/loss``, ``val/loss``, ``val/accuracy``,
      ``learning_rate``. A resumed run's history includes the epochs before the resume.
    - ``best_checkpoint_path`` / ``last_checkpoint_path`` / ``checkpoint_paths``: files
      written by this run (best by ``val/loss``, else the latest).
    - ``run_id``: the experiment DB's id of the run (None without a DB), the same on every rank.
    - ``alerts``: what ``MetricsEngine`` flagged per epoch (diverged or regressing metrics), as
      dicts; recorded on rank 0.
    - ``guardrails``: the messages of the strategy/devices guardrails that changed the request.
    """

    run_id: int | None
    run_name: str
    run_dir: str
    eval_summary: dict[str, Any]
    initial_eval: dict[str, Any] | None
    history: list[dict[str, Any]]
    best_checkpoint_path: str | None
    last_checkpoint_path: str | None
    checkpoint_paths: list[str]
    epochs_completed: int
    global_step: int
    stopped_early: bool
    resumed_from: str | None
    data: str
    distribution: dict[str, Any]
    rank: int
    world_size: int
    duration_seconds: float
    guardrails: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    db_path: str | None = None
    model: Any = field(default=None, repr=False, compare=False)

    def _keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def to_dict(self) -> dict[str, Any]:
        """Everything except the model, as strict JSON values (``jsonio`` spells non-finite
        floats)."""
        return {
            name: jsonable(getattr(self, name), where=f"TrainingResults.{name}")
            for name in self._keys()
            if name != "model"
        }
