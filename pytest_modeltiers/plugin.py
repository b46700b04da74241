"""pytest hooks of pytest-modeltiers (being written: see the foundation issue)."""

from __future__ import annotations
