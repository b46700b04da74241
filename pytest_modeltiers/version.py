"""The package's version, alone in a leaf module so reports and artifacts can record it.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
