"""The README documents every option: its flag and its ini twin appear in the options table."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_modeltiers.options import OPTIONS, Option

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.dest)
def test_every_option_is_in_the_readme_table(option: Option) -> None:
    rows = [
        line
        for line in README.splitlines()
        if line.startswith("| `")
        and any(f"`{flag} " in line or f"`{flag}`" in line for flag in option.flags)
    ]
    assert rows, f"README's options table has no row for {option.flags[-1]}"
    assert f"`{option.ini_name}`" in rows[0], f"the row of {option.flags[-1]} lacks its ini twin"
