"""Gist models as users run them: ``pytest --model gist:ID``, ``run-tiers`` and ``train`` configs.

The API is a local server (pytest-httpserver) named by ``PYTEST_MODELTIERS_GIST_API``. A
session in a subprocess confines itself (Landlock); an in-process pytester session never does,
so a gist is refused there unless ``--trust-model`` is given.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from gist_server import GIST_ID, OWNER, fixture_files, serve_gist
from pytest_httpserver import HTTPServer

from pytest_modeltiers.cli import main
from pytest_modeltiers.cli.run_tiers_config import load_tiers_config
from pytest_modeltiers.errors import ConfigError
from pytest_modeltiers.models.gist import API_ENV, load_gist_model
from pytest_modeltiers.models.sandbox import available
from pytest_modeltiers.store.experiment_db import ExperimentDB

needs_landlock = pytest.mark.skipif(not available(), reason="this kernel has no Landlock")


@pytest.fixture
def api(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv(API_ENV, httpserver.url_for(""))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    return httpserver


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@needs_landlock
@pytest.mark.slow
def test_a_gist_model_passes_tier1_inside_the_sandbox(
    pytester: pytest.Pytester, api: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A home holding credentials, and the default cache inside it: the sandbox reads the
    # gist's own cache folder (its helper module is imported there), never the home.
    home = pytester.path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_e2e")  # sent to the API, gone before the model runs
    revision = serve_gist(api, fixture_files("clean"))
    # Under xdist: the workers, confined before they start, run the revision the controller
    # resolved, from the cache (one request to the API in all).
    result = pytester.runpytest_subprocess(f"--model=gist:{GIST_ID}", "-m", "tier1", "-n", "2")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out + result.stderr.str()
    assert [request.path for request, _ in api.log] == [f"/gists/{GIST_ID}"]
    gist = load_gist_model(GIST_ID, revision=revision, cache_dir=home / ".cache/pytest-modeltiers")
    assert gist.from_cache
    result.stdout.fnmatch_lines(
        [
            f"modeltiers: model gist-{GIST_ID[:8]}: gist:{GIST_ID}::build_model -> TinyLM, * "
            "parameters; safety scan clean (all 2 Python files of the gist)",
            f"modeltiers:   gist {GIST_ID} by {OWNER}, revision {revision}, resolved as the "
            f"latest and NOT pinned: pin it with --model gist:{GIST_ID}@{revision}; files "
            f"layers.py, model.py (downloaded: *); sha256 {gist.sha256}",
            f"modeltiers: sandbox Landlock ABI *; allowed: reading gist {GIST_ID}; secret-like "
            "variables removed: *GITHUB_TOKEN*",
        ]
    )
    assert result.parseoutcomes()["passed"] >= 10


@needs_landlock
@pytest.mark.slow
def test_a_gist_with_a_dangerous_file_is_refused_before_any_of_it_runs(
    pytester: pytest.Pytester, api: HTTPServer
) -> None:
    serve_gist(api, fixture_files("malicious"))
    cache = pytester.path / "cache"
    result = pytester.runpytest_subprocess(
        "--co", f"--model=gist:{GIST_ID}", f"--modeltiers-cache-dir={cache}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*--model gist:{GIST_ID}: refused to run gist {GIST_ID} (revision *): the safety "
            "scan found capabilities a model should not need:",
            "*setup_env.py:3: [[]process-execution[]] *",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_sandbox_off_on_a_gist_is_refused_unless_trusted_and_the_header_says_both(
    pytester: pytest.Pytester, api: HTTPServer
) -> None:
    serve_gist(api, fixture_files("clean"))
    args = ["--co", f"--model=gist:{GIST_ID}", f"--modeltiers-cache-dir={pytester.path / 'c'}"]
    refused = pytester.runpytest(*args, "--modeltiers-sandbox=off")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [
            f"*--model gist:{GIST_ID}: a gist model is untrusted code and runs only inside the "
            "sandbox, but --modeltiers-sandbox off; drop --modeltiers-sandbox off, or pass "
            "--trust-model as well to run it unconfined (and unscanned)"
        ]
    )
    trusted = pytester.runpytest(*args, "--modeltiers-sandbox=off", "--trust-model")
    assert trusted.ret == pytest.ExitCode.OK, trusted.stderr.str()
    trusted.stdout.fnmatch_lines(
        [
            "modeltiers: model gist-*; safety scan SKIPPED (--trust-model)",
            "modeltiers: WARNING: --modeltiers-sandbox off, and --trust-model: gist model "
            f"gist:{GIST_ID} runs unconfined and unscanned, with all of your rights*",
        ]
    )


def test_a_gist_in_a_session_that_cannot_confine_itself_is_refused(
    pytester: pytest.Pytester, api: HTTPServer
) -> None:
    serve_gist(api, fixture_files("clean"))
    result = pytester.runpytest("--co", f"--model=gist:{GIST_ID}", "--modeltiers-cache-dir=c")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*runs only inside the sandbox, but this session runs inside another pytest session*"]
    )


def test_model_sha256_mismatch_on_a_gist_is_a_usage_error_naming_both_hashes(
    pytester: pytest.Pytester, api: HTTPServer
) -> None:
    serve_gist(api, fixture_files("clean"))
    cache = pytester.path / "cache"
    actual = load_gist_model(GIST_ID, cache_dir=cache).sha256
    wrong = "f" * 64
    result = pytester.runpytest(
        "--co",
        f"--model=gist:{GIST_ID}",
        f"--modeltiers-cache-dir={cache}",
        f"--model-sha256={wrong}",
        "--modeltiers-sandbox=off",
        "--trust-model",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*has SHA-256 {actual} (the names and bytes of its files), but --model-sha256 "
            f"expects {wrong}*"
        ]
    )


def test_a_pinned_gist_runs_offline_from_the_cache(
    pytester: pytest.Pytester, api: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    cache = pytester.path / "cache"
    sha = load_gist_model(GIST_ID, revision=revision, cache_dir=cache).sha256
    monkeypatch.setenv(API_ENV, _closed_port_url())  # offline from here on
    result = pytester.runpytest(
        "--co",
        f"--model=gist:{GIST_ID}@{revision}",
        f"--modeltiers-cache-dir={cache}",
        f"--model-sha256={sha}",
        "--modeltiers-sandbox=off",
        "--trust-model",
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            f"modeltiers:   gist {GIST_ID} by {OWNER}, revision {revision} (pinned); files "
            "layers.py, model.py (from the cache: *); sha256 " + sha
        ]
    )
    unpinned = pytester.runpytest(
        "--co", f"--model=gist:{GIST_ID}", f"--modeltiers-cache-dir={cache}"
    )
    assert unpinned.ret == pytest.ExitCode.USAGE_ERROR
    unpinned.stderr.fnmatch_lines(
        [f"*cannot reach *served offline when pinned: gist:{GIST_ID}@{revision}*"]
    )


# -- the commands ---------------------------------------------------------------------------------


def test_inspect_refuses_a_gist_it_would_load_unconfined(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", "--model", f"gist:{GIST_ID}"]) == 2
    err = capsys.readouterr().err
    assert "runs only inside the sandbox, which inspect does not enter" in err
    assert f"pytest --model=gist:{GIST_ID} --co" in err


def test_run_tiers_maps_gist_keys_to_the_model_spec(tmp_path: Path) -> None:
    config = tmp_path / "tiers.json"
    revision = "b" * 40
    config.write_text(
        json.dumps(
            {"tier": 1, "task_name": "lm_tiny", "gist_id": GIST_ID, "gist_revision": revision}
        )
    )
    loaded = load_tiers_config(config, cwd=tmp_path)
    assert loaded.model_note == f"gist_id {GIST_ID}@{revision}"
    options = loaded.pytest_options()
    assert options[:2] == ["--modeltiers-model", f"gist:{GIST_ID}@{revision}"]
    assert options[options.index("--task") + 1] == "lm_tiny"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"gist_revision": "b" * 40}, "gist_revision needs gist_id"),
        ({"gist_id": GIST_ID, "model_file": "m.py"}, "one of model_file or gist_id, not both"),
        ({"gist_id": GIST_ID, "gist_revision": "main"}, "'main' is not a gist revision"),
        ({"gist_idd": GIST_ID}, "unknown key 'gist_idd' (did you mean 'gist_id'?)"),
    ],
)
def test_run_tiers_refuses_bad_gist_keys(
    tmp_path: Path, keys: dict[str, str], message: str
) -> None:
    config = tmp_path / "tiers.json"
    config.write_text(json.dumps({"tier": 1, **keys}))
    with pytest.raises(ConfigError, match="invalid run-tiers config") as info:
        load_tiers_config(config, cwd=tmp_path)
    assert message in str(info.value)


def _train_config(tmp_path: Path, **keys: object) -> Path:
    config = tmp_path / "train.json"
    base = {
        "gist_id": GIST_ID,
        "epochs": 1,
        "batch_size": 2,
        "max_train_samples": 8,
        "max_val_samples": 4,
        "output_dir": str(tmp_path / "out"),
        "sandbox": "off",
    }
    config.write_text(json.dumps({**base, **keys}))
    return config


def test_train_refuses_an_unconfined_gist_unless_trusted(
    tmp_path: Path,
    api: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    serve_gist(api, fixture_files("clean"))
    assert main(["train", "--config", str(_train_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert (
        f"gist_id {GIST_ID}: a gist model is untrusted code and runs only inside the sandbox" in err
    )
    assert '"trust_model": true' in err


@pytest.mark.slow
def test_train_records_the_gist_id_revision_and_hash_of_its_run(
    tmp_path: Path,
    api: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    revision = serve_gist(api, fixture_files("clean"))
    db_path = tmp_path / "experiments.db"
    config = _train_config(tmp_path, trust_model=True, log_to_db=True, db_path=str(db_path))
    assert main(["train", "--config", str(config)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"revision {revision}, resolved as the latest and NOT pinned" in err
    gist = load_gist_model(
        GIST_ID, revision=revision, cache_dir=tmp_path / "cache/pytest-modeltiers"
    )
    with ExperimentDB(db_path) as db:
        run = db.get_run(1)
    assert (run["gist_id"], run["gist_revision"], run["gist_sha256"]) == (
        GIST_ID,
        revision,
        gist.sha256,
    )


def test_the_plugin_records_the_gist_of_its_runs_in_the_experiment_db(
    pytester: pytest.Pytester, api: HTTPServer
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    cache = pytester.path / "cache"
    db_path = pytester.path / "experiments.db"
    result = pytester.runpytest(
        f"--model=gist:{GIST_ID}",
        f"--modeltiers-cache-dir={cache}",
        "--modeltiers-sandbox=off",
        "--trust-model",
        f"--experiment-db={db_path}",
        "-m",
        "tier3 or tier5",
        "-k",
        "test_training_run or test_eval_metrics",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    sha = load_gist_model(GIST_ID, revision=revision, cache_dir=cache).sha256
    with ExperimentDB(db_path) as db:
        runs = [db.get_run(run_id) for run_id in db.list_runs(limit=None)["run_id"]]
    assert len(runs) == 2  # the training run (tier 3) and the evaluation run (tier 5)
    for run in runs:
        assert (run["gist_id"], run["gist_revision"], run["gist_sha256"]) == (
            GIST_ID,
            revision,
            sha,
        )
