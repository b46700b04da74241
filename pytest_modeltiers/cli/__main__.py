"""``python -m pytest_modeltiers.cli``: the ``modeltiers`` command (``torchrun -m`` uses it).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from pytest_modeltiers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
