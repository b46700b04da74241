"""Gist models as a library: spec forms, the API (a local stand-in), every failure, the cache.

A local HTTP server (pytest-httpserver) stands in for GitHub's API through
``PYTEST_MODELTIERS_GIST_API``; nothing here reaches the network.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest
from gist_server import GIST_ID, OWNER, fixture_files, revision_of, serve_gist
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import pytest_modeltiers
from pytest_modeltiers.errors import ModelSpecError, UnsafeModelError
from pytest_modeltiers.models import gist as gist_module
from pytest_modeltiers.models.gist import (
    API_ENV,
    GistError,
    GistRef,
    gist_sha256,
    load_gist_model,
    parse_gist_ref,
)
from pytest_modeltiers.models.loader import LoadRequest, load_model

REVISION = "a" * 40


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def api(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """The local API, named by the environment variable users set for another server."""
    monkeypatch.setenv(API_ENV, httpserver.url_for(""))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    return httpserver


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the spec's forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gist:abc123", GistRef("abc123")),
        (f"gist:abc123@{REVISION}", GistRef("abc123", REVISION)),
        ("gist:abc123@ABCDEF1", GistRef("abc123", "abcdef1")),
        ("gist:abc123::TinyLM", GistRef("abc123", None, "TinyLM")),
        (f"gist:abc123@{REVISION}::build", GistRef("abc123", REVISION, "build")),
        ("https://gist.github.com/octocat/abc123", GistRef("abc123")),
        ("https://gist.github.com/octocat/abc123/", GistRef("abc123")),
        ("https://gist.github.com/abc123", GistRef("abc123")),
        (f"https://gist.github.com/octocat/abc123/{REVISION}", GistRef("abc123", REVISION)),
        ("https://gist.github.com/octocat/abc123#file-model-py", GistRef("abc123")),
        ("https://gist.github.com/octocat/abc123::TinyLM", GistRef("abc123", None, "TinyLM")),
        ("model.py", None),
        ("package.module:attr", None),
    ],
)
def test_every_spec_form_names_the_gist(spec: str, expected: GistRef | None) -> None:
    assert parse_gist_ref(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gist:", "is not a gist id"),
        ("gist:abc/def", "is not a gist id"),
        ("gist:abc123@main", "'main' is not a gist revision (a commit hash"),
        ("gist:abc123@abc", "'abc' is not a gist revision"),
        ("gist:abc123::not-a-name", "'not-a-name' after '::' is not a Python name"),
        ("https://gist.github.com/octocat/abc123/raw/model.py", "is not a gist URL"),
    ],
)
def test_a_malformed_spec_says_what_is_wrong_and_the_forms(spec: str, message: str) -> None:
    with pytest.raises(GistError, match="gist:ID\\[@REVISION\\]") as info:
        parse_gist_ref(spec)
    assert message in str(info.value)


def test_load_gist_model_and_gist_model_are_public_names() -> None:
    assert pytest_modeltiers.load_gist_model is load_gist_model
    assert pytest_modeltiers.GistModel is gist_module.GistModel


# -- fetching, caching, hashing ---------------------------------------------------------------


def test_an_unpinned_gist_is_fetched_cached_hashed_and_said_to_be_unpinned(
    api: HTTPServer, cache: Path
) -> None:
    files = fixture_files("clean")
    revision = serve_gist(api, files)
    gist = load_gist_model(GIST_ID, cache_dir=cache)

    assert (gist.id, gist.revision, gist.owner) == (GIST_ID, revision, OWNER)
    assert gist.files == ("layers.py", "model.py")
    assert gist.path == cache / "gists" / GIST_ID / revision / "files"
    assert {p.name: p.read_text() for p in gist.path.iterdir()} == files
    assert gist.sha256 == gist_sha256({k: v.encode() for k, v in files.items()})
    assert gist.model_file == gist.path / "model.py"
    assert not gist.pinned and not gist.from_cache
    line = gist.describe()
    assert f"revision {revision}, resolved as the latest and NOT pinned" in line
    assert f"pin it with --model gist:{GIST_ID}@{revision}" in line
    assert f"by {OWNER}" in line and "files layers.py, model.py" in line
    assert f"sha256 {gist.sha256}" in line
    manifest = json.loads((gist.path.parent / "gist.json").read_text())
    assert manifest["sha256"] == gist.sha256 and manifest["revision"] == revision
    assert gist.run_fields() == {
        "gist_id": GIST_ID,
        "gist_revision": revision,
        "gist_sha256": gist.sha256,
    }


def test_an_unpinned_gist_asks_the_api_each_time_and_reuses_cached_files(
    api: HTTPServer, cache: Path
) -> None:
    serve_gist(api, fixture_files("clean"))
    load_gist_model(f"gist:{GIST_ID}", cache_dir=cache)
    calls = len(api.log)
    again = load_gist_model(f"gist:{GIST_ID}", cache_dir=cache)
    assert len(api.log) == calls + 1  # the API said which revision is the latest
    assert again.from_cache and not again.pinned


def test_a_pinned_revision_is_served_from_the_cache_offline(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    first = load_gist_model(GIST_ID, revision=revision, cache_dir=cache)
    assert first.pinned and not first.from_cache
    monkeypatch.setenv(API_ENV, closed_port_url())  # the network is gone
    again = load_gist_model(
        f"https://gist.github.com/{OWNER}/{GIST_ID}/{revision}", cache_dir=cache
    )
    assert again.from_cache and again.pinned
    assert (again.sha256, again.owner, again.files) == (first.sha256, OWNER, first.files)
    assert f"revision {revision} (pinned)" in again.describe()
    short = load_gist_model(f"gist:{GIST_ID}@{revision[:8]}", cache_dir=cache)
    assert short.revision == revision


def test_the_hash_covers_names_and_bytes() -> None:
    base = gist_sha256({"model.py": b"x = 1\n", "helper.py": b""})
    assert base != gist_sha256({"model.py": b"x = 1\n", "helper2.py": b""})  # renamed
    assert base != gist_sha256({"model.py": b"x = 1\n"})  # removed
    assert base != gist_sha256({"model.py": b"x = 1", "helper.py": b"\n"})  # a byte moved
    assert base == gist_sha256({"helper.py": b"", "model.py": b"x = 1\n"})  # order is not


def test_github_token_is_sent_to_the_api(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"model.py": "x = 1\n"}
    revision = revision_of(files)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test_token")
    from gist_server import gist_json

    api.expect_request(
        f"/gists/{GIST_ID}", headers={"Authorization": "Bearer ghp_test_token"}
    ).respond_with_json(gist_json(api, files, revision))
    assert load_gist_model(GIST_ID, cache_dir=cache).revision == revision


def test_a_truncated_file_is_fetched_whole_from_its_raw_url(api: HTTPServer, cache: Path) -> None:
    files = fixture_files("clean")
    serve_gist(api, files, truncate=("layers.py",))
    gist = load_gist_model(GIST_ID, cache_dir=cache)
    assert (gist.path / "layers.py").read_text() == files["layers.py"]
    assert any("/raw/" in request.path for request, _ in api.log)


def test_a_file_truncated_at_its_raw_url_too_is_an_error(api: HTTPServer, cache: Path) -> None:
    files = fixture_files("clean")
    serve_gist(api, files, truncate=("layers.py",), raw_overrides={"layers.py": "import torch\n"})
    with pytest.raises(
        GistError, match=r"layers.py is .* bytes, but its raw URL .* gave 13"
    ) as info:
        load_gist_model(GIST_ID, cache_dir=cache)
    assert f"git clone https://gist.github.com/{GIST_ID}.git" in str(info.value)
    assert not (cache / "gists").exists()  # nothing cached


def test_a_gist_without_a_python_file_is_refused(api: HTTPServer, cache: Path) -> None:
    serve_gist(api, {"README.md": "# notes\n", "config.json": "{}"})
    with pytest.raises(GistError) as info:
        load_gist_model(GIST_ID, cache_dir=cache)
    assert f"gist {GIST_ID} has no Python file (files: README.md, config.json)" in str(info.value)


def test_several_python_files_without_model_py_is_ambiguous(api: HTTPServer, cache: Path) -> None:
    serve_gist(api, {"a.py": "", "b.py": ""})
    with pytest.raises(GistError, match=r"several Python files \(a.py, b.py\).*rename"):
        load_gist_model(GIST_ID, cache_dir=cache)


def test_a_file_name_reaching_outside_the_cache_is_refused(api: HTTPServer, cache: Path) -> None:
    serve_gist(api, {"model.py": "", "../escape.py": "x = 1\n"})
    with pytest.raises(GistError, match=r"'../escape.py', which is not a plain file name"):
        load_gist_model(GIST_ID, cache_dir=cache)
    assert not (cache / "gists" / "escape.py").exists()


def test_a_cached_file_changed_afterwards_is_refused(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    gist = load_gist_model(GIST_ID, revision=revision, cache_dir=cache)
    (gist.path / "layers.py").write_text("import os\n")
    with pytest.raises(GistError, match=r"changed after it was fetched .*delete that folder"):
        load_gist_model(GIST_ID, revision=revision, cache_dir=cache)


def test_a_failed_write_leaves_nothing_half_written(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_gist(api, fixture_files("clean"))
    real = gist_module.atomic_write
    calls = []

    def fail_second(path: Path, write: object) -> Path:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, write)  # type: ignore[arg-type]

    monkeypatch.setattr(gist_module, "atomic_write", fail_second)
    with pytest.raises(GistError, match=r"cannot write gist .* No space left on device"):
        load_gist_model(GIST_ID, cache_dir=cache)
    assert list((cache / "gists" / GIST_ID).iterdir()) == []


# -- the API's failures -----------------------------------------------------------------------


def test_not_found(api: HTTPServer, cache: Path) -> None:
    api.expect_request("/gists/deadbeef").respond_with_json({"message": "Not Found"}, status=404)
    with pytest.raises(GistError) as info:
        load_gist_model("deadbeef", cache_dir=cache)
    assert "gist deadbeef not found (" in str(info.value)
    assert "answered 404): check the id" in str(info.value)


def test_a_revision_not_found(api: HTTPServer, cache: Path) -> None:
    api.expect_request(f"/gists/{GIST_ID}/{REVISION}").respond_with_json({}, status=404)
    with pytest.raises(GistError, match=f"revision {REVISION} of gist {GIST_ID} not found"):
        load_gist_model(GIST_ID, revision=REVISION, cache_dir=cache)


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limited_says_when_it_resets_in_local_time(
    api: HTTPServer, cache: Path, status: int
) -> None:
    reset = int(time.time()) + 600
    api.expect_request(f"/gists/{GIST_ID}").respond_with_json(
        {"message": "API rate limit exceeded"},
        status=status,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    with pytest.raises(GistError) as info:
        load_gist_model(GIST_ID, cache_dir=cache)
    message = str(info.value)
    local = datetime.fromtimestamp(reset).astimezone()
    assert f"rate limit is exhausted; it resets at {local:%H:%M:%S} local time" in message
    assert "in 10 min" in message
    assert "set GITHUB_TOKEN to raise the limit" in message
    assert "gist:ID@REVISION is served from the cache" in message


def test_a_secondary_rate_limit_with_retry_after(api: HTTPServer, cache: Path) -> None:
    api.expect_request(f"/gists/{GIST_ID}").respond_with_json(
        {}, status=403, headers={"Retry-After": "120"}
    )
    with pytest.raises(GistError, match=r"rate limit is exhausted; it resets at .* in 2 min"):
        load_gist_model(GIST_ID, cache_dir=cache)


def test_a_rejected_token_is_named(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_expired")
    api.expect_request(f"/gists/{GIST_ID}").respond_with_json({}, status=401)
    with pytest.raises(GistError, match="GITHUB_TOKEN is set but was not accepted"):
        load_gist_model(GIST_ID, cache_dir=cache)


def test_network_down_names_the_cached_revisions_to_pin(
    api: HTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_ENV, closed_port_url())
    with pytest.raises(GistError) as info:
        load_gist_model(GIST_ID, cache_dir=cache)
    assert "cannot reach http://127.0.0.1:" in str(info.value)
    assert "the network is down or blocked" in str(info.value)
    assert f"No revision of gist {GIST_ID} is cached" in str(info.value)

    monkeypatch.setenv(API_ENV, api.url_for(""))
    revision = serve_gist(api, fixture_files("clean"))
    load_gist_model(GIST_ID, cache_dir=cache)
    monkeypatch.setenv(API_ENV, closed_port_url())
    with pytest.raises(GistError, match=f"served offline when pinned: gist:{GIST_ID}@{revision}"):
        load_gist_model(GIST_ID, cache_dir=cache)


def test_an_api_that_does_not_answer_in_time(api: HTTPServer, cache: Path) -> None:
    def stall(request: Request) -> Response:
        time.sleep(1.0)
        return Response("{}", content_type="application/json")

    api.expect_request(f"/gists/{GIST_ID}").respond_with_handler(stall)
    with pytest.raises(GistError, match=r"no answer within 0\.2 s"):
        load_gist_model(GIST_ID, cache_dir=cache, timeout=0.2)


def test_an_answer_that_is_not_a_gist(api: HTTPServer, cache: Path) -> None:
    api.expect_request(f"/gists/{GIST_ID}").respond_with_data("<html>proxy login</html>")
    with pytest.raises(GistError, match="did not answer with a gist"):
        load_gist_model(GIST_ID, cache_dir=cache)


# -- the loader: every file scanned, the hash pinned ------------------------------------------


def test_the_loader_builds_the_gist_model_and_says_where_it_came_from(
    api: HTTPServer, cache: Path, tmp_path: Path
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    loaded = load_model(LoadRequest(spec=f"gist:{GIST_ID}", rootdir=tmp_path, cache_dir=cache))
    assert loaded.class_name == "TinyLM" and loaded.name == f"gist-{GIST_ID[:8]}"
    assert loaded.how == f"gist:{GIST_ID}::build_model"
    assert loaded.safety == "safety scan clean (all 2 Python files of the gist)"
    assert loaded.gist is not None and loaded.sha256 == loaded.gist.sha256
    header = "\n".join(loaded.describe("m"))
    assert f"gist {GIST_ID} by {OWNER}, revision {revision}, resolved as the latest" in header
    identity = loaded.identity("m")  # the health report: the gist's hash, its file's folder
    assert identity["sha256"] == loaded.gist.sha256 and revision in identity["file"]


def test_every_file_of_the_gist_is_scanned_not_only_what_the_model_imports(
    api: HTTPServer, cache: Path, tmp_path: Path
) -> None:
    serve_gist(api, fixture_files("malicious"))
    with pytest.raises(UnsafeModelError) as info:
        load_model(LoadRequest(spec=f"gist:{GIST_ID}", rootdir=tmp_path, cache_dir=cache))
    message = str(info.value)
    assert f"refused to run gist {GIST_ID}" in message
    assert "setup_env.py:3: [process-execution]" in message
    assert "pass --trust-model to run it anyway" in message


def test_model_sha256_pins_the_gist_and_a_mismatch_names_both_hashes(
    api: HTTPServer, cache: Path, tmp_path: Path
) -> None:
    revision = serve_gist(api, fixture_files("clean"))
    gist = load_gist_model(GIST_ID, cache_dir=cache)
    pinned = LoadRequest(
        spec=f"gist:{GIST_ID}", rootdir=tmp_path, cache_dir=cache, sha256=gist.sha256
    )
    assert load_model(pinned).sha256 == gist.sha256
    wrong = "0" * 64
    with pytest.raises(UnsafeModelError) as info:
        load_model(
            LoadRequest(spec=f"gist:{GIST_ID}", rootdir=tmp_path, cache_dir=cache, sha256=wrong)
        )
    message = str(info.value)
    assert f"has SHA-256 {gist.sha256}" in message and f"--model-sha256 expects {wrong}" in message
    assert f"--model gist:{GIST_ID}@{revision}" in message


def test_a_gist_failure_is_a_model_spec_error(api: HTTPServer, tmp_path: Path) -> None:
    api.expect_request("/gists/deadbeef").respond_with_json({}, status=404)
    with pytest.raises(ModelSpecError, match="gist deadbeef not found"):
        load_model(LoadRequest(spec="gist:deadbeef", rootdir=tmp_path, cache_dir=tmp_path))
