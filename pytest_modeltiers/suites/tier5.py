"""Tier 5: is the model still good in the world?

A test with nothing to judge is skipped with the reason, never passed;
``--modeltiers-require`` makes a missing input fail instead.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modeltiers.atomic import atomic_write
from pytest_modeltiers.checks import tier5
from pytest_modeltiers.config._util import read_json_object
from pytest_modeltiers.config.eval_config import EvalConfig
from pytest_modeltiers.drift.distribution import INPUT, OUTPUT, Profile, compare_profiles
from pytest_modeltiers.drift.distribution import compute_profile as _compute_profile
from pytest_modeltiers.drift.profile_io import (
    log_profile_to_db,
    resolve_reference_profile,
)
from pytest_modeltiers.errors import ConfigError, ModelTiersError
from pytest_modeltiers.evaluation.held_out import (
    EvalResult,
    eval_dataloader,
    resolve_eval_dataset,
    run_evaluation,
)
from pytest_modeltiers.evaluation.regression import compare_results
from pytest_modeltiers.models.loader import LoadedModel
from pytest_modeltiers.recorder import CheckRecorder
from pytest_modeltiers.report import CheckResult
from pytest_modeltiers.report.progress import Progress, progress_for
from pytest_modeltiers.settings import Settings
from pytest_modeltiers.store.experiment_db import ExperimentDB
from pytest_modeltiers.suites.support import expect
from pytest_modeltiers.triggers.config import PRESETS
from pytest_modeltiers.triggers.manager import evaluate_retraining, trigger_history
from pytest_modeltiers.triggers.report import RetrainingReport

pytestmark = pytest.mark.tier5

Batch = dict[str, Any]


@dataclass(frozen=True)
class Baseline:
    """Where a baseline's weights are and how to name it in messages."""

    checkpoint: Path
    description: str
    run_id: int | None = None


@dataclass(eq=False)
class Tier5State:
    """Everything tier 5 computes once per model and shares between its tests."""

    loaded: LoadedModel
    settings: Settings
    db_path: Path
    persistent_db: bool
    _model: torch.nn.Module | None = None
    _batches: list[Batch] | None = None
    _data: str = ""
    _evaluation: EvalResult | None = None
    _run_id: int | None = None
    _current: Profile | None = None
    _current_count: int | None = None
    _eval_config: EvalConfig | None = None
    baseline_metrics: dict[str, float] | None = None
    _reference: tuple[Profile, str] | None = None
    _errors: dict[str, str] = field(default_factory=dict)
    #: Where profiling reports the rows it profiled (nothing written without a terminal).
    progress: Progress = field(default_factory=lambda: Progress(None, live=False))
    #: The retraining triggers' values in earlier checks (before this session's), for plots.
    trigger_history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    _db: ExperimentDB | None = None

    @property
    def db(self) -> ExperimentDB:
        if self._db is None:
            self._db = ExperimentDB(self.db_path)
        return self._db

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self.loaded.new_model()
        return self._model

    def batches(self) -> tuple[list[Batch], str]:
        """The evaluation batches, drawn once so every model sees the same ones."""
        if self._batches is None:
            path = self.settings.eval_data
            config = self.eval_config()
            dataset, self._data = resolve_eval_dataset(self.loaded.task, config, path=path)
            self._batches = [dict(b) for b in eval_dataloader(dataset, config)]
        return self._batches, self._data

    def eval_config(self) -> EvalConfig | None:
        """``--eval-config``: which data, how much of it and how batched (None: the defaults)."""
        path = self.settings.eval_config
        if path is None:
            return None
        if self._eval_config is None:
            self._eval_config = EvalConfig.from_dict(read_json_object(path, ConfigError))
        return self._eval_config

    def evaluation(self) -> EvalResult:
        if self._evaluation is None:
            batches, data = self.batches()
            self._evaluation = run_evaluation(
                self.model,
                self.loaded.adapter,
                self.loaded.task,
                self.eval_config(),
                batches,
                data_description=data,
            )
        return self._evaluation

    def run_id(self) -> int:
        """The session's evaluation run in the experiment database, recorded on first use."""
        if self._run_id is None:
            result = self.evaluation()
            task = self.loaded.task
            db = self.db
            run_id = db.register_run(
                {
                    "run_name": f"tier5-eval-{task.name}",
                    "task_name": task.name,
                    "modality": task.modality,
                    **self.loaded.run_fields(),  # a gist's id, revision and hash
                    "config": {
                        "kind": "tier5_evaluation",
                        "model": self.loaded.spec.raw,
                        "model_class": self.loaded.class_name,
                        "data": result.data,
                    },
                }
            )
            db.log_metrics(run_id, result.metrics, "eval")
            batches = self.batches()[0]
            rows = sum(_rows(batch) for batch in batches)
            with self.progress.stage("tier 5 reference profile", total=rows, unit="rows") as stage:
                profile = _compute_profile(
                    self.model, self.loaded.adapter, task, batches, source=result.data
                )
                stage.update(rows, note=f"of {result.data}")
            log_profile_to_db(db, run_id, profile)
            if self.persistent_db:
                # In this database's own artifact folder (named by its identity, so another
                # database in the same folder never overwrites it), recorded relative to the
                # database with its sha256 (checked before it is used as a baseline).
                path = _save_weights(self.model, db.artifact_path(run_id, "weights.pt"))
                db.log_artifact(run_id, "checkpoint", path, {"format": "state_dict"})
            db.update_run_status(run_id, "completed")
            self._run_id = run_id
        return self._run_id

    def current_profile(self) -> Profile:
        if self._current is None:
            task = self.loaded.task
            path = self.settings.current_data
            dataset, where = resolve_eval_dataset(task, path=path)
            self._current_count = len(dataset) if isinstance(dataset, Sized) else None
            with self.progress.stage(
                "tier 5 current profile", total=self._current_count, unit="rows"
            ) as stage:
                self._current = _compute_profile(
                    self.model, self.loaded.adapter, task, dataset, source=where
                )
                stage.update(self._current_count or 0, note=f"of {where}")
        return self._current

    def reference_profile(self) -> tuple[Profile, str] | None:
        spec = self.settings.reference_profile
        if spec is None:
            return None
        if self._reference is None:
            db = self.settings.experiment_db
            self._reference = resolve_reference_profile(spec, db_path=db)
        return self._reference


def _save_weights(model: torch.nn.Module, path: Path) -> Path:
    """The model's state dict (tensors only: ``weights_only=True`` loads it), written atomically."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save(weights, f))


@pytest.fixture(scope="session")
def _tier5(
    request: pytest.FixtureRequest,
    modeltiers_loaded_model: LoadedModel,
    modeltiers_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Tier5State:
    configured = modeltiers_settings.experiment_db
    if configured:
        db_path, persistent = Path(configured), True
    else:
        db_path, persistent = tmp_path_factory.mktemp("tier5") / "experiments.db", False
    state = Tier5State(modeltiers_loaded_model, modeltiers_settings, db_path, persistent)
    state.progress = progress_for(request.config)
    return state


def _rows(batch: Batch) -> int:
    """The examples in a batch: the first dimension of its first tensor."""
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.dim() else 0


def _failed(name: str, exc: Exception) -> CheckResult:
    return CheckResult.failed(name, tier5.TIER, str(exc))


def _required(settings: Settings, requirement: str) -> bool:
    """Whether ``--modeltiers-require`` names ``requirement`` (a missing input then fails)."""
    return requirement in settings.require


def _shipped_data_refused(state: Tier5State, name: str) -> CheckResult | None:
    """With ``--modeltiers-require tier5.eval-data``, a failure when no data of the user's own
    was given (the check would evaluate the task's shipped test split)."""
    if not _required(state.settings, "tier5.eval-data"):
        return None
    config = state.eval_config()
    if state.settings.eval_data or (
        config is not None and Path(config.dataset_id).suffix.lower() in (".pt", ".jsonl")
    ):
        return None
    return tier5.check_missing_input(
        name,
        missing="evaluation data",
        message=f"no evaluation data was given, so {name} would judge the model on the task's "
        "shipped test split: pass --eval-data PATH (.pt or .jsonl held-out data), or "
        "--eval-config with a dataset_id naming such a file",
        requirement="tier5.eval-data",
        required=True,
    )


# --------------------------------------------------------------------------- baselines


def _checkpoint_of_run(db: ExperimentDB, run_id: int, db_path: Path) -> Path:
    """The run's "checkpoint" artifact (the one marked best, else the newest), checked
    against the sha256 recorded with it; else a checkpoint path among its params."""
    artifacts = db.get_artifacts(run_id, "checkpoint")
    if len(artifacts):
        best = [
            int(aid)
            for aid, meta in zip(artifacts["artifact_id"], artifacts["metadata"], strict=True)
            if isinstance(meta, dict) and meta.get("best") is True
        ]
        return db.artifact_file(best[0] if best else int(artifacts["artifact_id"].iloc[0]))
    params = db.get_params(run_id)
    candidates = [
        str(params[k])
        for k in ("best_checkpoint_path", "checkpoint_path", "last_checkpoint_path")
        if isinstance(params.get(k), str)
    ]
    if not candidates:
        raise ModelTiersError(
            f"run {run_id} of {db_path} has no checkpoint (no 'checkpoint' artifact, no "
            "checkpoint_path param), so there are no baseline weights to evaluate. Choose a "
            "run that saved one: a training run, or a tier 5 run recorded with --experiment-db."
        )
    for text in candidates:
        path = Path(text)
        for option in (db_path.parent / path, path):  # relative paths: the database's folder
            if option.is_file():
                return option
    raise ModelTiersError(
        f"run {run_id}'s checkpoint {candidates[0]} does not exist (looked relative to "
        f"{db_path.parent} and to the current directory); restore the file or pick another run"
    )


def _load_baseline(state: Tier5State, baseline: Baseline) -> torch.nn.Module:
    """A fresh model from the same code with the baseline's weights (strict, weights_only)."""
    try:
        data = torch.load(baseline.checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelTiersError(
            f"cannot load the {baseline.description} checkpoint {baseline.checkpoint} with "
            f"torch.load(weights_only=True): {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    weights = _state_dict_of(data)
    model = state.loaded.new_model()
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelTiersError(
            f"the {baseline.description} checkpoint {baseline.checkpoint} does not fit "
            f"{state.loaded.class_name}: {' '.join(str(exc).split())[:500]} The baseline is "
            "re-evaluated with the current model code, so it must have the same parameter "
            "names and shapes."
        ) from None
    device = next(iter(state.model.parameters()), torch.empty(0)).device
    return model.to(device)


def _state_dict_of(data: Any) -> dict[str, Any]:
    """Weights from a run_training (Lightning) checkpoint, a lean-loop one or a state dict."""
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        from pytest_modeltiers.training.checkpoints import model_state_dict

        return model_state_dict(data)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return dict(data["model"])
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return dict(data)
    raise ModelTiersError(
        "the checkpoint holds neither a state dict, nor a run_training checkpoint "
        "('state_dict'), nor a lean-loop checkpoint ('model')"
    )


def _production_baseline(settings: Settings) -> Baseline | None:
    """The model registry's ``production`` version as the baseline, when a registry is set.

    Reads the registry named by ``--model-registry``; without one there is no production
    baseline and the caller skips.
    """
    registry_path = settings.registry
    if not registry_path:
        return None
    from pytest_modeltiers.store.model_registry import ModelRegistry

    entry = ModelRegistry(registry_path).get_by_alias("production")
    if entry is None:
        return None
    return Baseline(
        Path(entry["checkpoint_path"]),
        f"registry production model {entry['name']} {entry['version']}",
    )


def _baseline(state: Tier5State) -> Baseline | None:
    """The baseline of ``--baseline-run`` (the session resolved ``latest`` or a name to an id
    when it started; ``latest`` left as it is means no run saved a checkpoint yet), else the
    registry's production model."""
    spec = state.settings.baseline_run
    if spec is None:
        return _production_baseline(state.settings)
    db_option = state.settings.experiment_db
    if not db_option:
        raise ModelTiersError(
            f"--baseline-run {spec} names a run of the experiment database, but no database is "
            "set: add --experiment-db PATH"
        )
    if not spec.isdigit():
        return None
    run = int(spec)
    db_path = Path(db_option)
    db = state.db if db_path == state.db_path else ExperimentDB(db_path)
    checkpoint = _checkpoint_of_run(db, run, db_path)
    return Baseline(checkpoint, f"baseline run {run}", run)


# --------------------------------------------------------------------------- the tests


def test_eval_metrics(
    request: pytest.FixtureRequest, _tier5: Tier5State, modeltiers_check: CheckRecorder
) -> None:
    """The held-out metrics are finite; they are recorded in the experiment DB as a run."""
    try:
        refused = _shipped_data_refused(_tier5, "test_eval_metrics")
        if refused is not None:
            expect(request, modeltiers_check, refused)
            return
        result = _tier5.evaluation()
        run_id = _tier5.run_id()
    except ModelTiersError as exc:
        expect(request, modeltiers_check, _failed("test_eval_metrics", exc))
        return
    expect(request, modeltiers_check, tier5.check_eval_metrics(result, run_id=run_id))


def test_baseline_regression(
    request: pytest.FixtureRequest, _tier5: Tier5State, modeltiers_check: CheckRecorder
) -> None:
    """The model is not worse than the baseline beyond the tolerance and the bootstrap CI."""
    name = "test_baseline_regression"
    start = time.perf_counter()
    try:
        baseline = _baseline(_tier5)
        if baseline is None:
            message = (
                "no baseline to compare with: pass --baseline-run RUN_ID (a run of "
                "--experiment-db that saved a checkpoint), or promote a model to the registry's "
                "production alias"
            )
            if _tier5.settings.baseline_run is not None:
                message = (
                    f"no baseline to compare with: --baseline-run {_tier5.settings.baseline_run} "
                    f"found no completed run with a checkpoint in {_tier5.settings.experiment_db}"
                    " from before this session; this session records one (the next run "
                    "compares with it)"
                )
            missing = tier5.check_missing_input(
                name,
                missing="baseline",
                message=message,
                requirement="tier5.baseline",
                required=_required(_tier5.settings, "tier5.baseline"),
            )
            expect(request, modeltiers_check, missing)
            return
        refused = _shipped_data_refused(_tier5, name)
        if refused is not None:
            expect(request, modeltiers_check, refused)
            return
        candidate = _tier5.evaluation()
        baseline_model = _load_baseline(_tier5, baseline)
        batches, data = _tier5.batches()
        base = run_evaluation(
            baseline_model,
            _tier5.loaded.adapter,
            _tier5.loaded.task,
            _tier5.eval_config(),
            batches,
            data_description=data,
        )
        _tier5.baseline_metrics = dict(base.metrics)
        comparison = compare_results(
            base, candidate, tolerance=_tier5.settings.regression_tolerance
        )
        if baseline.run_id is not None:
            _tier5.db.create_comparison(
                baseline.run_id,
                _tier5.run_id(),
                notes=f"{comparison.status}: " + comparison.summary().splitlines()[0],
            )
    except ModelTiersError as exc:
        expect(request, modeltiers_check, _failed(name, exc))
        return
    result = tier5.check_baseline_regression(
        comparison, baseline=baseline.description, duration_seconds=time.perf_counter() - start
    )
    expect(request, modeltiers_check, result)


def _drift_test(
    request: pytest.FixtureRequest,
    state: Tier5State,
    recorder: CheckRecorder,
    *,
    name: str,
    group: str,
    what: str,
) -> None:
    __tracebackhide__ = True
    try:
        required = _required(state.settings, "tier5.reference")
        loaded = state.reference_profile()
        if loaded is None:
            message = (
                f"no reference profile to compare {what}s with: pass --reference-profile "
                "profile.json or RUN_ID[:NAME] (with --experiment-db); a tier 5 run records one"
            )
            missing = tier5.check_missing_input(
                name,
                missing="reference profile",
                message=message,
                requirement="tier5.reference",
                required=required,
            )
            expect(request, recorder, missing)
            return
        reference, where = loaded
        if group == OUTPUT and not reference.has_outputs:
            message = (
                f"the reference profile ({where}) has no output signals: it was computed "
                "without a model; compute it with the model to check prediction drift (pass "
                "--reference-profile with a profile a tier 5 run recorded)"
            )
            missing = tier5.check_missing_input(
                name,
                missing="prediction signals of the reference profile",
                message=message,
                requirement="tier5.reference",
                required=required,
            )
            expect(request, recorder, missing)
            return
        report = compare_profiles(
            reference,
            state.current_profile(),
            group=group,
            alpha=state.settings.drift_alpha,
        )
    except ModelTiersError as exc:
        expect(request, recorder, _failed(name, exc))
        return
    result = tier5.check_drift(
        report,
        check_name=name,
        what=what,
        reference=where,
        profiles=(reference, state.current_profile()),
    )
    expect(request, recorder, result)


def test_input_drift(
    request: pytest.FixtureRequest, _tier5: Tier5State, modeltiers_check: CheckRecorder
) -> None:
    """The current data's inputs match the reference profile's (tokens, lengths, pixels)."""
    _drift_test(
        request, _tier5, modeltiers_check, name="test_input_drift", group=INPUT, what="input"
    )


def test_prediction_drift(
    request: pytest.FixtureRequest, _tier5: Tier5State, modeltiers_check: CheckRecorder
) -> None:
    """The model's outputs on the current data match the reference profile's."""
    _drift_test(
        request,
        _tier5,
        modeltiers_check,
        name="test_prediction_drift",
        group=OUTPUT,
        what="prediction",
    )


# --------------------------------------------------------------------------- retraining


def _retraining_paths(settings: Settings, model_key: str | None) -> tuple[Path, Path] | None:
    """``retraining[-MODEL].json`` and ``.md`` next to ``--modeltiers-report``, if one is set."""
    health = settings.report
    if not health:
        return None
    stem = "retraining" if model_key is None else f"retraining-{model_key}"
    folder = Path(health).parent
    return folder / f"{stem}.json", folder / f"{stem}.md"


def _policy(policy: str, evaluation: EvalResult) -> str | dict[str, Any]:
    """A preset watches the evaluation's primary metric (the presets' own val/loss
    is not something tier 5 produces); a policy file is used as written."""
    if policy not in PRESETS:
        return policy
    metric = f"eval/{evaluation.primary_metric}"
    return {"preset": policy, "overrides": {"performance": {"metric_name": metric}}}


@pytest.fixture(scope="session")
def retraining_report(_tier5: Tier5State, modeltiers_model_key: str | None) -> RetrainingReport:
    """The configured retraining triggers evaluated on this session's tier 5 results.

    Inputs: the evaluation metrics (``eval/<metric>``), the drift of the current data against
    the reference profile (input and prediction signals together; none without a reference),
    the current data's volume, and the baseline (the ``--baseline-run`` evaluation when
    ``test_baseline_regression`` made one, else the registry's production model). Streaks of
    triggers that need K consecutive windows persist in the experiment database per model.
    Written next to the health report when ``--modeltiers-report`` is set.
    """
    settings = _tier5.settings
    registry = None
    try:
        if settings.registry:
            from pytest_modeltiers.store.model_registry import ModelRegistry

            registry = ModelRegistry(settings.registry)
        loaded = _tier5.reference_profile()
        drift = None
        if loaded is not None:
            drift = compare_profiles(
                loaded[0], _tier5.current_profile(), alpha=settings.drift_alpha
            )
        else:
            _tier5.current_profile()
        _tier5.trigger_history = trigger_history(_tier5.db, f"tier5.{_tier5.loaded.name}")
        report = evaluate_retraining(
            _policy(settings.retraining_policy, _tier5.evaluation()),
            current_metrics=_tier5.evaluation().metrics,
            baseline_metrics=_tier5.baseline_metrics,
            split="eval",
            drift=drift,
            current_count=_tier5._current_count,
            experiment_db=_tier5.db,
            model_registry=registry,
            model_name=_tier5.loaded.name if registry is not None else None,
            scope=f"tier5.{_tier5.loaded.name}",
            gate=settings.retraining_gate,
        )
    except ModelTiersError as exc:
        problem = f"the retraining triggers could not be evaluated: {exc}"
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    paths = _retraining_paths(settings, modeltiers_model_key)
    if paths is not None:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        report.to_json(paths[0])
        report.to_markdown(paths[1])
    return report


def test_retraining_triggers(
    request: pytest.FixtureRequest,
    _tier5: Tier5State,
    retraining_report: RetrainingReport,
    modeltiers_check: CheckRecorder,
    modeltiers_model_key: str | None,
    modeltiers_settings: Settings,
) -> None:
    """The retraining decision: fails when the report's severity reaches the gate; skipped
    when no trigger had its data (``--modeltiers-require tier5.triggers`` fails it instead)."""
    paths = _retraining_paths(modeltiers_settings, modeltiers_model_key)
    written = str(paths[0]) if paths is not None else None
    required = _required(modeltiers_settings, "tier5.triggers")
    result = tier5.check_retraining(
        retraining_report,
        written_to=written,
        require_data=required,
        history=_tier5.trigger_history,
    )
    expect(request, modeltiers_check, result)
