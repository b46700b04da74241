"""GitHub gists as models: ``gist:ID[@REVISION][::NAME]``, fetched, cached by revision, hashed.

PYTEST_DONT_REWRITE

A gist is fetched once per revision through the GitHub gists API (``GET /gists/ID[/REVISION]``,
stdlib ``urllib``, a timeout, ``GITHUB_TOKEN`` when set) and written atomically into a cache
folder named by its id and revision (a git commit: the name is the content's address). A pinned
revision found in the cache is served from it without touching the network; an unpinned spec
asks the API which revision is the latest each time. Every failure (not found, rate limit,
network down, no Python file, a file the API truncated and its raw URL cannot supply) is a
``GistError`` saying what happened and what to do. Nothing here runs the gist's code: the
loader scans every file and the session confines the process before it does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pytest_modeltiers.atomic import atomic_write, atomic_write_text
from pytest_modeltiers.errors import ModelSpecError
from pytest_modeltiers.version import __version__

if TYPE_CHECKING:
    import urllib.error

__all__ = [
    "API_ENV",
    "GistError",
    "GistModel",
    "GistRef",
    "default_cache_dir",
    "fetch_gist",
    "gist_sha256",
    "load_gist_model",
    "parse_gist_ref",
]

#: Environment variable naming the API's base URL (a GitHub Enterprise server, a test server).
API_ENV = "PYTEST_MODELTIERS_GIST_API"
DEFAULT_API = "https://api.github.com"
#: The token sent to the API (only to the API's host, never to a raw file's).
TOKEN_ENV = "GITHUB_TOKEN"
DEFAULT_TIMEOUT = 30.0
#: The largest file accepted from a gist (GitHub's raw URLs stop at 10 MB too).
MAX_FILE_BYTES = 10 * 1024 * 1024
#: The file taken as the model when a gist has several Python files.
MODEL_FILE = "model.py"
GIST_FORMS = "gist:ID[@REVISION][::NAME] or https://gist.github.com/OWNER/ID[/REVISION][::NAME]"

_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")
_REVISION = re.compile(r"^[0-9a-f]{7,40}$")
_URL = re.compile(
    r"^https?://gist\.github\.com/(?:(?P<owner>[A-Za-z0-9-]+)/)?(?P<id>[0-9A-Za-z]+)"
    r"(?:\.git)?(?:/(?P<revision>[0-9a-fA-F]{7,40}))?/?$"
)
_MANIFEST = "gist.json"
_FILES = "files"


class GistError(ModelSpecError):
    """A gist cannot be fetched or used; the message says why and what to do."""


@dataclass(frozen=True)
class GistRef:
    """What a spec names: a gist id, maybe a revision, maybe an attribute of its model file."""

    id: str
    revision: str | None = None
    attr: str | None = None


@dataclass(frozen=True)
class GistModel:
    """A gist at one revision, in the local cache."""

    id: str
    #: The full revision (a 40-digit commit hash), whether pinned or resolved.
    revision: str
    #: ``owner.login`` of the API, ``anonymous`` for a gist without one.
    owner: str
    #: The gist's file names, sorted.
    files: tuple[str, ...]
    #: SHA-256 over the names and bytes of every file (``gist_sha256``).
    sha256: str
    #: The folder holding the files.
    path: Path
    #: Whether the spec named the revision (else it was resolved as the latest).
    pinned: bool
    #: Whether the files came from the cache (else they were downloaded now).
    from_cache: bool

    @property
    def model_file(self) -> Path:
        """The gist's model file: ``model.py``, else its only Python file."""
        return self.path / model_file_name(self.id, self.files)

    @property
    def python_files(self) -> tuple[Path, ...]:
        """Every ``.py`` file of the gist, the model file first: the safety scan reads them all."""
        model = self.model_file
        others = [self.path / n for n in self.files if n.endswith(".py") and n != model.name]
        return (model, *others)

    @property
    def cache_dir(self) -> Path:
        """The cache this revision is in (``CACHE/gists/ID/REVISION/files``)."""
        return self.path.parents[3]

    @property
    def spec(self) -> str:
        """The pinned spec of this revision (``gist:ID@REVISION``)."""
        return f"gist:{self.id}@{self.revision}"

    def describe(self) -> str:
        """The session header's line: owner, revision (pinned or not), files and hash."""
        if self.pinned:
            pin = f"revision {self.revision} (pinned)"
        else:
            pin = (
                f"revision {self.revision}, resolved as the latest and NOT pinned: pin it with "
                f"--model {self.spec}"
            )
        source = "from the cache" if self.from_cache else "downloaded"
        return (
            f"gist {self.id} by {self.owner}, {pin}; files {', '.join(self.files)} "
            f"({source}: {self.path}); sha256 {self.sha256}"
        )

    def run_fields(self) -> dict[str, str]:
        """The experiment database's columns for a run of this gist."""
        return {"gist_id": self.id, "gist_revision": self.revision, "gist_sha256": self.sha256}


def parse_gist_ref(text: str) -> GistRef | None:
    """The gist ``text`` names (``gist:ID[@REV][::NAME]`` or a gist URL), None for other specs.

    Raises ``GistError`` for a gist spec of the wrong form.
    """
    raw = text.strip()
    is_url = raw.startswith(("https://gist.github.com/", "http://gist.github.com/"))
    if not raw.startswith("gist:") and not is_url:
        return None
    body, sep, attr = raw.partition("::") if not is_url else _split_url_attr(raw)
    if sep and not attr.isidentifier():
        raise GistError(f"{attr!r} after '::' is not a Python name; expected {GIST_FORMS}")
    if is_url:
        match = _URL.match(body.split("#", 1)[0].split("?", 1)[0])
        if match is None:
            raise GistError(f"{raw!r} is not a gist URL; expected {GIST_FORMS}")
        gist_id, revision = match["id"], match["revision"]
    else:
        gist_id, _, revision = body.removeprefix("gist:").partition("@")
        revision = revision or None
    if not _ID.match(gist_id):
        raise GistError(f"{gist_id!r} is not a gist id (letters and digits); expected {GIST_FORMS}")
    if revision is not None:
        revision = revision.lower()
        if not _REVISION.match(revision):
            raise GistError(
                f"{revision!r} is not a gist revision (a commit hash: 7 to 40 hexadecimal "
                f"digits, as in the gist's revisions page); expected {GIST_FORMS}"
            )
    return GistRef(id=gist_id, revision=revision, attr=attr or None)


def _split_url_attr(raw: str) -> tuple[str, str, str]:
    """``https://...::NAME``: the ``::`` after the URL's scheme separator."""
    scheme, _, rest = raw.partition("://")
    body, sep, attr = rest.partition("::")
    return f"{scheme}://{body}", sep, attr


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-modeltiers``, else ``~/.cache/pytest-modeltiers``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-modeltiers"


def gist_sha256(files: Mapping[str, bytes]) -> str:
    """SHA-256 over every file's name and bytes, in name order.

    Each file adds ``NAME``, a NUL byte, its length in decimal, a NUL byte and its bytes, so a
    renamed file, a moved byte or a file added or removed all change the hash.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(name.encode("utf-8") + b"\0" + str(len(content)).encode() + b"\0")
        digest.update(content)
    return digest.hexdigest()


def model_file_name(gist_id: str, names: tuple[str, ...]) -> str:
    """``model.py`` when the gist has one, else its only ``.py`` file; else a ``GistError``."""
    python = [name for name in names if name.endswith(".py")]
    if MODEL_FILE in python:
        return MODEL_FILE
    if len(python) == 1:
        return python[0]
    if not python:
        raise GistError(
            f"gist {gist_id} has no Python file (files: {', '.join(names) or 'none'}); a gist "
            f"model needs a .py file that defines the model, ideally named {MODEL_FILE}"
        )
    raise GistError(
        f"gist {gist_id} has several Python files ({', '.join(python)}) and none is named "
        f"{MODEL_FILE}, so which one defines the model is ambiguous; rename that file to "
        f"{MODEL_FILE} in the gist (its helpers may stay), or download the gist and pass "
        "the file's path to --model"
    )


def load_gist_model(
    gist: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> GistModel:
    """Fetch (or find in the cache) a gist and return where its files are, with their hash.

    ``gist`` is an id, ``gist:ID[@REV]`` or a gist URL; ``revision`` pins a revision (it must
    agree with one in ``gist``). ``cache_dir`` defaults to ``default_cache_dir()``, ``api_url``
    to ``$PYTEST_MODELTIERS_GIST_API``, else ``https://api.github.com``. Nothing of the gist is
    run. Raises ``GistError``.
    """
    text = str(gist).strip()
    ref = parse_gist_ref(text if (":" in text or "/" in text) else f"gist:{text}")
    if ref is None:
        raise GistError(f"{gist!r} names no gist; expected an id, {GIST_FORMS}")
    if revision is not None:
        pinned = parse_gist_ref(f"gist:{ref.id}@{revision}")
        assert pinned is not None
        if ref.revision is not None and ref.revision != pinned.revision:
            raise GistError(
                f"{gist!r} names revision {ref.revision} and revision= says {revision}; "
                "give the revision once"
            )
        ref = GistRef(ref.id, pinned.revision, ref.attr)
    return fetch_gist(ref, cache_dir=cache_dir, api_url=api_url, timeout=timeout)


def fetch_gist(
    ref: GistRef,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> GistModel:
    """``load_gist_model`` for a parsed reference (the model spec's path)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _Fetcher(cache, api_url or os.environ.get(API_ENV) or DEFAULT_API, timeout).load(ref)


class _Fetcher:
    """One gist lookup: the cache first for a pinned revision, else the API."""

    def __init__(self, cache: Path, api_url: str, timeout: float) -> None:
        self.cache = cache
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def load(self, ref: GistRef) -> GistModel:
        folder = self.cache / "gists" / ref.id
        if ref.revision is not None:
            cached = self._cached(folder, ref.revision, pinned=True)
            if cached is not None:
                return cached
        url = f"{self.api_url}/gists/{ref.id}" + (f"/{ref.revision}" if ref.revision else "")
        data = self._api_json(url, ref)
        revision = _revision_of(data, ref)
        if ref.revision is None:
            cached = self._cached(folder, revision, pinned=False)
            if cached is not None:
                return cached
        files = self._files(data, ref.id)
        owner = _owner_of(data)
        return self._store(folder, ref, revision, owner, files)

    # -- the cache ----------------------------------------------------------------------------

    def _cached(self, folder: Path, revision: str, *, pinned: bool) -> GistModel | None:
        """The cached revision (a full hash, or a prefix naming exactly one), checked."""
        if _complete(folder / revision):  # no listing: a sandbox may let only it be read
            entry = folder / revision
        else:
            found = folder.iterdir() if len(revision) < 40 and folder.is_dir() else ()
            entries = [p for p in found if p.name.startswith(revision) and _complete(p)]
            if len(entries) != 1:
                return None
            entry = entries[0]
        try:
            manifest = json.loads((entry / _MANIFEST).read_text(encoding="utf-8"))
            names = tuple(manifest["files"])
            contents = {name: (entry / _FILES / name).read_bytes() for name in names}
            owner, expected = str(manifest["owner"]), str(manifest["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GistError(
                f"the cached gist {entry} cannot be read ({exc}); delete that folder to fetch "
                "the gist again"
            ) from None
        digest = gist_sha256(contents)
        if digest != expected:
            raise GistError(
                f"the cached gist {entry} changed after it was fetched (sha256 {digest}, "
                f"recorded {expected}); delete that folder to fetch the gist again"
            )
        return GistModel(
            id=folder.name,
            revision=entry.name,
            owner=owner,
            files=names,
            sha256=digest,
            path=entry / _FILES,
            pinned=pinned,
            from_cache=True,
        )

    def _store(
        self, folder: Path, ref: GistRef, revision: str, owner: str, files: dict[str, bytes]
    ) -> GistModel:
        """Write the files into a staging folder, then rename it into place in one step."""
        names = tuple(sorted(files))
        model_file_name(ref.id, names)  # no Python file, or an ambiguous one: nothing cached
        digest = gist_sha256(files)
        target = folder / revision
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{revision}.", suffix=".partial", dir=folder))
        try:
            for name, content in files.items():
                atomic_write(staging / _FILES / name, functools.partial(_write, content))
            manifest = {
                "id": ref.id,
                "revision": revision,
                "owner": owner,
                "files": list(names),
                "sha256": digest,
                "fetched_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "api": self.api_url,
            }
            atomic_write_text(staging / _MANIFEST, json.dumps(manifest, indent=2) + "\n")
            staging.chmod(0o755)
            try:
                os.rename(staging, target)
            except OSError:
                if not _complete(target):  # not another process's copy: a real failure
                    raise
        except OSError as exc:
            raise GistError(
                f"cannot write gist {ref.id} into the cache {folder}: {exc}; pass "
                "--modeltiers-cache-dir (ini modeltiers_cache_dir) with a writable folder"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return GistModel(
            id=ref.id,
            revision=revision,
            owner=owner,
            files=names,
            sha256=digest,
            path=target / _FILES,
            pinned=ref.revision is not None,
            from_cache=False,
        )

    # -- the API --------------------------------------------------------------------------------

    def _api_json(self, url: str, ref: GistRef) -> dict[str, Any]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        token = os.environ.get(TOKEN_ENV)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = self._get(url, headers, ref)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GistError(f"{url} did not answer with a gist (not a JSON object); try again")
        return data

    def _get(self, url: str, headers: dict[str, str], ref: GistRef) -> bytes:
        # Here, not at the top: urllib.request loads ssl, which sessions without a gist skip.
        import urllib.error
        import urllib.request
        from http.client import HTTPException

        request = urllib.request.Request(
            url, headers={"User-Agent": f"pytest-modeltiers/{__version__}", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read(MAX_FILE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            message = _http_message(exc, url, ref)
            exc.close()  # its connection, which would otherwise stay open until collected
            raise GistError(message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                reason = f"no answer within {self.timeout:g} s"
            raise GistError(
                f"cannot reach {url} ({reason}): the network is down or blocked; check the "
                "connection (or a proxy's HTTPS_PROXY setting). "
                + _offline_hint(self.cache / "gists" / ref.id, ref)
            ) from None
        if len(body) > MAX_FILE_BYTES:
            raise GistError(
                f"{url} answered with more than {MAX_FILE_BYTES // (1024 * 1024)} MB; a gist "
                "model is a few source files: download it and pass the model file's path"
            )
        return body

    def _files(self, data: dict[str, Any], gist_id: str) -> dict[str, bytes]:
        if data.get("truncated"):
            raise GistError(
                f"gist {gist_id} has more files than the API lists (it truncated the list at "
                f"300); clone it (git clone https://gist.github.com/{gist_id}.git) and pass the "
                "model file's path to --model"
            )
        entries = data.get("files")
        if not isinstance(entries, dict) or not entries:
            raise GistError(
                f"gist {gist_id} has no files (files: none); a gist model needs a .py file "
                f"that defines the model, ideally named {MODEL_FILE}"
            )
        model_file_name(gist_id, tuple(sorted(entries)))
        files: dict[str, bytes] = {}
        for name, entry in sorted(entries.items()):
            _check_name(gist_id, name)
            entry = entry if isinstance(entry, dict) else {}
            content = entry.get("content")
            if entry.get("truncated") or not isinstance(content, str):
                files[name] = self._raw(gist_id, name, entry)
            else:
                files[name] = content.encode("utf-8")
        return files

    def _raw(self, gist_id: str, name: str, entry: dict[str, Any]) -> bytes:
        """A file the API truncated (over 1 MB), from its raw URL (no token sent there)."""
        raw_url = entry.get("raw_url")
        if not isinstance(raw_url, str) or not raw_url.startswith(("https://", "http://")):
            raise GistError(
                f"gist {gist_id}: the API truncated {name} and gave no raw URL to fetch it "
                "whole; download the gist and pass the model file's path to --model"
            )
        headers = {}
        token = os.environ.get(TOKEN_ENV)
        if token and _same_host(raw_url, self.api_url):
            headers["Authorization"] = f"Bearer {token}"
        content = self._get(raw_url, headers, GistRef(gist_id))
        size = entry.get("size")
        if isinstance(size, int) and len(content) != size:
            raise GistError(
                f"gist {gist_id}: {name} is {size} bytes, but its raw URL {raw_url} gave "
                f"{len(content)} (the file is truncated there too); clone the gist "
                f"(git clone https://gist.github.com/{gist_id}.git) and pass the model file's "
                "path to --model"
            )
        return content


def _write(content: bytes, handle: BinaryIO) -> None:
    handle.write(content)


def _complete(entry: Path) -> bool:
    return entry.is_dir() and not entry.name.startswith(".") and (entry / _MANIFEST).is_file()


def _check_name(gist_id: str, name: str) -> None:
    """A gist file name is a plain name: nothing that could reach outside the cache folder."""
    if (
        not name
        or name in {".", ".."}
        or "/" in name
        or "\\" in name
        or "\0" in name
        or name != os.path.basename(name)
    ):
        raise GistError(f"gist {gist_id} has a file named {name!r}, which is not a plain file name")


def _same_host(url: str, other: str) -> bool:
    return urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(other).netloc


def _revision_of(data: dict[str, Any], ref: GistRef) -> str:
    """The full revision the API answered with: the newest entry of its history."""
    history = data.get("history")
    versions = [
        str(item.get("version"))
        for item in history or []
        if isinstance(item, dict) and isinstance(item.get("version"), str)
    ]
    if ref.revision is not None:
        for version in versions:
            if version.lower().startswith(ref.revision):
                return version.lower()
        if len(ref.revision) == 40:
            return ref.revision
        raise GistError(
            f"gist {ref.id}: the API did not confirm the full hash of revision {ref.revision}; "
            "pin the revision with its 40-digit hash (the gist's revisions page shows it)"
        )
    if not versions or not _REVISION.match(versions[0].lower()):
        raise GistError(
            f"gist {ref.id}: the API's answer names no revision (no history), so the gist "
            "cannot be cached or pinned; try again, or pin a revision with gist:ID@REVISION"
        )
    return versions[0].lower()


def _owner_of(data: dict[str, Any]) -> str:
    owner = data.get("owner")
    login = owner.get("login") if isinstance(owner, dict) else None
    return str(login) if login else "anonymous"


def _http_message(exc: urllib.error.HTTPError, url: str, ref: GistRef) -> str:
    what = f"revision {ref.revision} of gist {ref.id}" if ref.revision else f"gist {ref.id}"
    if exc.code == 404:
        if ref.revision:
            return (
                f"{what} not found ({url} answered 404): check the revision on the gist's "
                "revisions page, or drop @REVISION to take the latest"
            )
        return (
            f"{what} not found ({url} answered 404): check the id (the last part of the gist's "
            "URL); a secret gist is found by its id too, a deleted one is gone"
        )
    remaining = exc.headers.get("X-RateLimit-Remaining") if exc.headers else None
    reset = exc.headers.get("X-RateLimit-Reset") if exc.headers else None
    retry_after = exc.headers.get("Retry-After") if exc.headers else None
    if exc.code in (403, 429) and (remaining == "0" or reset or retry_after or exc.code == 429):
        token = os.environ.get(TOKEN_ENV)
        advice = (
            "wait, or use a token with a higher limit"
            if token
            else f"set {TOKEN_ENV} to raise the limit (60 requests an hour without a token)"
        )
        return (
            f"GitHub's API refused {url} with {exc.code}: its rate limit is exhausted; "
            f"{_reset_time(reset, retry_after)}; {advice}, or pin a revision that is already "
            "cached (gist:ID@REVISION is served from the cache without the network)"
        )
    if exc.code in (401, 403):
        return f"GitHub's API refused {url} with {exc.code} ({exc.reason}): " + (
            f"{TOKEN_ENV} is set but was not accepted; renew it or unset it"
            if os.environ.get(TOKEN_ENV)
            else "access denied"
        )
    return f"GitHub's API answered {url} with {exc.code} ({exc.reason}); try again later"


def _reset_time(reset: str | None, retry_after: str | None) -> str:
    """When the limit resets, in local time: ``it resets at 14:05:09 local time (in 12 min)``."""
    moment: float | None = None
    try:
        if reset:
            moment = float(reset)
        elif retry_after:
            moment = time.time() + float(retry_after)
    except ValueError:
        moment = None
    if moment is None:
        return "GitHub did not say when it resets"
    local = datetime.fromtimestamp(moment).astimezone()
    minutes = max(0, round((moment - time.time()) / 60))
    return f"it resets at {local:%H:%M:%S} local time ({local:%Y-%m-%d %Z}, in {minutes} min)"


def _offline_hint(folder: Path, ref: GistRef) -> str:
    """Which revisions the cache holds, to pin one offline."""
    cached = sorted(p.name for p in folder.iterdir() if _complete(p)) if folder.is_dir() else []
    if not cached:
        return f"No revision of gist {ref.id} is cached for use offline."
    shown = ", ".join(f"gist:{ref.id}@{rev}" for rev in cached)
    return f"Cached revisions, served offline when pinned: {shown}."
