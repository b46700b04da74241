"""A local stand-in for GitHub's gists API (pytest-httpserver), for the gist tests.

``serve_gist`` answers ``GET /gists/ID`` (the latest revision) and ``GET /gists/ID/REVISION`` as
GitHub does: the files with their content (or truncated, with a raw URL), the owner and the
history, newest first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gist"
GIST_ID = "0123456789abcdef0123"
OWNER = "octocat"


def revision_of(files: dict[str, str]) -> str:
    """A 40-digit revision hash that changes with the files (as a git commit would)."""
    text = "".join(f"{name}\0{content}\0" for name, content in sorted(files.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def fixture_files(folder: str) -> dict[str, str]:
    """The files of ``fixtures/gist/FOLDER`` as a gist's name -> text."""
    return {p.name: p.read_text() for p in sorted((FIXTURES / folder).iterdir()) if p.is_file()}


def gist_json(
    server: HTTPServer,
    files: dict[str, str],
    revision: str,
    *,
    gist_id: str = GIST_ID,
    owner: str | None = OWNER,
    truncate: tuple[str, ...] = (),
) -> dict[str, Any]:
    entries = {}
    for name, content in files.items():
        raw_path = f"/raw/{gist_id}/{revision}/{name}"
        entry: dict[str, Any] = {
            "filename": name,
            "language": "Python" if name.endswith(".py") else "Text",
            "raw_url": server.url_for(raw_path),
            "size": len(content.encode()),
            "truncated": name in truncate,
            "content": content[: len(content) // 2] if name in truncate else content,
        }
        entries[name] = entry
    return {
        "id": gist_id,
        "files": entries,
        "owner": {"login": owner} if owner else None,
        "truncated": False,
        "history": [{"version": revision, "committed_at": "2026-01-01T00:00:00Z"}],
    }


def serve_gist(
    server: HTTPServer,
    files: dict[str, str],
    *,
    gist_id: str = GIST_ID,
    owner: str | None = OWNER,
    truncate: tuple[str, ...] = (),
    raw_overrides: dict[str, str] | None = None,
) -> str:
    """Serve ``files`` as the latest revision of ``gist_id`` (and at that revision); return it.

    Truncated files are served whole at their raw URL (or as ``raw_overrides`` says).
    """
    revision = revision_of(files)
    data = gist_json(server, files, revision, gist_id=gist_id, owner=owner, truncate=truncate)
    server.expect_request(f"/gists/{gist_id}").respond_with_json(data)
    server.expect_request(f"/gists/{gist_id}/{revision}").respond_with_json(data)
    for name in truncate:
        content = (raw_overrides or {}).get(name, files[name])
        server.expect_request(f"/raw/{gist_id}/{revision}/{name}").respond_with_data(content)
    return revision
