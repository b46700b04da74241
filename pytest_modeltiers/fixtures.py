"""Fixtures for users' own tests: the model named with ``--model`` and what goes with it.

With several ``--model`` options, every test that uses one of these fixtures runs once per
model (its id carries the model's name). Override any of them in a ``conftest.py`` to customise
(``def training_config(training_config): return ...``). This module is imported by the plugin,
so torch and the library are imported inside the fixtures, never at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modeltiers.errors import ModelTiersError
from pytest_modeltiers.recorder import RECORDER_KEY, CheckRecorder
from pytest_modeltiers.session import SESSION_KEY
from pytest_modeltiers.settings import Settings

if TYPE_CHECKING:
    from torch import Tensor, nn

    from pytest_modeltiers.checks.tier3_run import TrainingOutcome
    from pytest_modeltiers.config import EvalConfig, TaskSpec, TrainingConfig
    from pytest_modeltiers.export.cache import ExportCache, ExportOutcome
    from pytest_modeltiers.models.adapters import TaskAdapter
    from pytest_modeltiers.models.loader import LoadedModel

MODEL_KEY_FIXTURE = "modeltiers_model_key"
SAMPLE_BATCH_SIZE = 2
SAMPLE_SEQ_LEN = 16


@pytest.fixture(scope="session")
def modeltiers_model_key() -> str | None:
    """Which loaded model a test uses; parametrised by the plugin when there are several."""
    return None


@pytest.fixture(scope="session")
def modeltiers_loaded_model(
    request: pytest.FixtureRequest, modeltiers_model_key: str | None
) -> LoadedModel:
    """The resolved model spec: how to build the model, its task, adapter and provenance."""
    state = request.config.stash[SESSION_KEY]
    try:
        return state.model(modeltiers_model_key)
    except ModelTiersError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def model_factory(modeltiers_loaded_model: LoadedModel) -> Callable[[], nn.Module]:
    """Build a fresh, independent instance each call (same initial weights every time)."""
    return modeltiers_loaded_model.new_model


@pytest.fixture
def model(model_factory: Callable[[], nn.Module]) -> nn.Module:
    """A fresh instance of the model for this test alone, in train mode as constructed."""
    return model_factory()


@pytest.fixture(scope="session")
def shared_model(modeltiers_loaded_model: LoadedModel) -> nn.Module:
    """One instance shared by every test of the session that asks for it (opt-in sharing).

    Faster for large models; tests that use it must not change its weights or mode for others.
    """
    return modeltiers_loaded_model.new_model()


@pytest.fixture(scope="session")
def task_spec(modeltiers_loaded_model: LoadedModel) -> TaskSpec:
    """The model's task, with ``vocab_size`` filled in from the model when it was not given."""
    return modeltiers_loaded_model.task


@pytest.fixture(scope="session")
def adapter(modeltiers_loaded_model: LoadedModel) -> TaskAdapter:
    """The adapter that calls the model and reads its outputs for this task."""
    return modeltiers_loaded_model.adapter


@pytest.fixture(scope="session")
def training_config(task_spec: TaskSpec) -> TrainingConfig:
    """A small training config that agrees with the task (name, vocabulary, length)."""
    from pytest_modeltiers.config import TrainingConfig

    return TrainingConfig(
        task_name=task_spec.name,
        vocab_size=task_spec.vocab_size,
        max_seq_len=task_spec.max_seq_len or TrainingConfig().max_seq_len,
        epochs=1,
        batch_size=SAMPLE_BATCH_SIZE,
        use_amp=False,
        precision="32",
    )


@pytest.fixture(scope="session")
def eval_config(training_config: TrainingConfig) -> EvalConfig:
    """The evaluation config derived from ``training_config``."""
    from pytest_modeltiers.config import build_eval_config

    return build_eval_config(training_config)


@pytest.fixture
def sample_batch(task_spec: TaskSpec) -> dict[str, Tensor]:
    """A small deterministic batch for the task: 2 examples, up to 16 tokens or one image each."""
    from pytest_modeltiers.models.batches import make_batch

    seq_len = min(SAMPLE_SEQ_LEN, task_spec.max_seq_len) if task_spec.max_seq_len else None
    return make_batch(task_spec, SAMPLE_BATCH_SIZE, seq_len, seed=0)


@pytest.fixture
def modeltiers_check(request: pytest.FixtureRequest) -> CheckRecorder:
    """Where a built-in suite test records its check results (one verdict per test)."""
    recorder = CheckRecorder()
    request.node.stash[RECORDER_KEY] = recorder
    return recorder


@pytest.fixture(scope="session")
def modeltiers_settings(request: pytest.FixtureRequest) -> Settings:
    """The session's options, one typed attribute each (``modeltiers_settings.max_batch_size``)."""
    return request.config.stash[SESSION_KEY].settings


@pytest.fixture(scope="session")
def modeltiers_options(modeltiers_settings: Settings) -> dict[str, Any]:
    """The session's options as a dict keyed by ini name (``modeltiers_max_batch_size``).

    Kept for existing tests; ``modeltiers_settings`` has the same values as typed attributes.
    """
    return modeltiers_settings.as_options()


# -- tier 3: the session's real training run -------------------------------------------------


@pytest.fixture(scope="session")
def training_run_config(training_config: TrainingConfig) -> TrainingConfig:
    """The settings of ``training_run``: ``training_config`` made into a short run (2 epochs of
    128 examples, lr 3e-3, one process; see ``checks.tier3_run``). Override to change them."""
    from pytest_modeltiers.checks.tier3_run import short_run_config

    return short_run_config(training_config)


@pytest.fixture(scope="session")
def training_run(
    request: pytest.FixtureRequest,
    modeltiers_settings: Settings,
    modeltiers_loaded_model: LoadedModel,
    training_run_config: TrainingConfig,
    eval_config: EvalConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainingOutcome:
    """One real ``run_training`` of a fresh model on the task's shipped data, once per session.

    The run is logged to ``--experiment-db`` (else a database in the session's temp dir) and
    its files go to the session's temp dir. A failed run is returned, not raised:
    ``test_training_run`` reports it, and ``trained_model`` fails the tests that need it.
    """
    import re
    from pathlib import Path

    from pytest_modeltiers.checks.tier3_run import execute_training_run
    from pytest_modeltiers.report.progress import progress_for

    loaded = modeltiers_loaded_model
    folder = tmp_path_factory.mktemp("modeltiers-training-" + re.sub(r"[^\w.-]+", "_", loaded.name))
    db_option = modeltiers_settings.experiment_db
    db_path = Path(db_option) if db_option else folder / "experiments.db"
    return execute_training_run(
        loaded.new_model,
        loaded.adapter,
        training_run_config,
        loaded.task,
        eval_config,
        db_path=db_path,
        run_dir=folder / "run",
        run_fields=loaded.run_fields(),  # a gist's id, revision and hash
        progress=progress_for(request.config),  # steps, loss and ETA on the terminal
    )


@pytest.fixture(scope="session")
def trained_model(training_run: TrainingOutcome) -> nn.Module:
    """The model trained by ``training_run`` (shared by the session: do not change it)."""
    if training_run.results is None:
        pytest.fail(f"the training run failed: {training_run.error_message}", pytrace=False)
    model: nn.Module = training_run.results.model
    return model


# -- tier 4: exports, once per format and session ----------------------------------------------


@pytest.fixture(scope="session")
def export_format(modeltiers_settings: Settings) -> str:
    """The format ``exported_model`` exports: the first of ``--export-formats``.

    The built-in tier 4 suite parametrizes it over every format; parametrize it in your own
    tests the same way (``@pytest.mark.parametrize("export_format", ["onnx"])``).
    """
    return modeltiers_settings.export_formats[0]


@pytest.fixture(scope="session")
def modeltiers_exports(
    request: pytest.FixtureRequest,
    modeltiers_settings: Settings,
    modeltiers_loaded_model: LoadedModel,
    modeltiers_model_key: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> ExportCache:
    """Every export of the model in this session, made on first request (``ExportCache``).

    Artifacts go to ``--export-dir``/<model> (else pytest's temporary directory), with a
    ``metadata.json`` listing each artifact and its SHA-256.
    """
    import re
    from pathlib import Path

    from pytest_modeltiers.export.cache import ExportCache
    from pytest_modeltiers.export.tolerances import ToleranceError, ToleranceTable

    settings = modeltiers_settings
    loaded = modeltiers_loaded_model
    name = re.sub(r"[^\w.-]+", "_", modeltiers_model_key or loaded.name)
    if settings.export_dir:
        directory = Path(settings.export_dir).resolve() / name
    else:
        directory = tmp_path_factory.mktemp(f"modeltiers-export-{name}")
    try:
        tolerances = ToleranceTable.from_sources(request.config.rootpath, settings.export_tolerance)
    except ToleranceError as exc:
        pytest.fail(str(exc), pytrace=False)
    return ExportCache(
        loaded.new_model,
        loaded.adapter,
        loaded.task,
        directory,
        onnx_exporter=settings.export_onnx_exporter,
        timeout=settings.timeout,
        tolerances=tolerances,
        max_batch=settings.max_batch_size,
        quantization=settings.export_quantization,
    )


@pytest.fixture(scope="session")
def exported_model(
    request: pytest.FixtureRequest, modeltiers_exports: ExportCache, export_format: str
) -> ExportOutcome:
    """The model exported to ``export_format`` once per session: an ``ExportOutcome``.

    ``exported_model.runner(inputs)`` runs the loaded artifact (inputs by name, e.g.
    ``input_ids``); ``exported_model.artifact.path`` is the file. A failed export is returned,
    not raised (``exported_model.error`` says why), so ``test_export`` can report it.
    """
    from pytest_modeltiers.report.progress import progress_for

    with progress_for(request.config).stage(f"tier 4 export {export_format}", unit="") as stage:
        outcome = modeltiers_exports.outcome(export_format)
        stage.note = "exported" if outcome.ok else "export failed"
    return outcome
