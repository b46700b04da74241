"""``verify_repro_bundle``: is every member of a bundle the one its manifest names?

PYTEST_DONT_REWRITE

Every member listed in ``MANIFEST.json`` must be present and have the listed sha256 (and
size); a member the manifest does not list is a problem too (something was added). A path
that is not a readable zip with a manifest raises ``ReproBundleError``.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pytest_modeltiers.repro.bundle import MANIFEST, ReproBundleError, manifest_of

__all__ = ["BundleVerification", "verify_repro_bundle"]


@dataclass(frozen=True)
class BundleVerification:
    """The verdict on one bundle: ``problems`` lists ``(member, what is wrong)`` in manifest
    order, then members the manifest does not list."""

    path: Path
    checked: int
    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> str | None:
        return self.problems[0][0] if self.problems else None


def verify_repro_bundle(path: str | os.PathLike[str]) -> BundleVerification:
    """Check every member's sha256 against the manifest (see the module docstring)."""
    bundle = Path(path)
    if not bundle.is_file():
        raise ReproBundleError(f"{bundle}: no such file")
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ReproBundleError(f"{bundle} is not a readable zip file: {exc}") from None
    problems: list[tuple[str, str]] = []
    with archive:
        try:
            manifest = manifest_of(archive)
        except ReproBundleError as exc:
            raise ReproBundleError(f"{bundle}: {exc}") from None
        members = manifest["members"]
        present = set(archive.namelist())
        for name in sorted(members):
            expected = members[name]
            if name not in present:
                problems.append((name, "listed in the manifest but not in the zip"))
                continue
            try:
                data = archive.read(name)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                problems.append((name, f"cannot be read: {exc}"))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected.get("sha256") or len(data) != expected.get("size"):
                problems.append(
                    (
                        name,
                        f"sha256 {digest} ({len(data)} bytes), manifest: {expected.get('sha256')}",
                    )
                )
        for name in sorted(present - set(members) - {MANIFEST}):
            problems.append((name, "in the zip but not in the manifest"))
    return BundleVerification(bundle, len(members), tuple(problems))
