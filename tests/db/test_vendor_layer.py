"""What differs per database is asked of ``pynenc_django.vendors`` and nowhere else.

A vendor test anywhere else (``connection.vendor == "postgresql"``, a dict keyed by vendor
names) is how the hot paths grew a branch per database in eight modules; this keeps the
differences readable in one file per database.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import connection

from pynenc_django.vendors import SUPPORTED_VENDORS, UnsupportedDatabase, vendor_of

PACKAGE = Path(__file__).resolve().parents[2] / "pynenc_django"
# The support check itself, and frozen history.
ALLOWED = {PACKAGE / "checks.py"}
EXEMPT_DIRS = (PACKAGE / "vendors", PACKAGE / "migrations")
NAMES = set(SUPPORTED_VENDORS)


def vendor_tests(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "vendor" for o in operands) or any(
                isinstance(o, ast.Constant) and o.value in NAMES for o in operands
            ):
                found.append(f"{name}:{node.lineno}")
        elif isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value in NAMES for k in node.keys
        ):
            found.append(f"{name}:{node.lineno}")
    return found


def test_no_vendor_test_outside_the_vendor_layer() -> None:
    modules = [
        p
        for p in PACKAGE.rglob("*.py")
        if p not in ALLOWED and not any(d in p.parents for d in EXEMPT_DIRS)
    ]
    assert len(modules) > 50  # the scan sees the package
    offenders = [
        hit
        for path in modules
        for hit in vendor_tests(path.read_text(), str(path.relative_to(PACKAGE)))
    ]
    assert offenders == []


def test_the_scan_finds_each_form_of_vendor_test() -> None:
    source = (
        "def f(c, vendor):\n"
        '    a = c.vendor == "mysql"\n'
        '    b = vendor != "sqlite"\n'
        '    return {"postgresql": 1}.get(c.vendor)\n'
    )
    assert vendor_tests(source, "m.py") == ["m.py:2", "m.py:3", "m.py:4"]


def test_each_alias_gets_its_vendor() -> None:
    assert vendor_of(connection).name == connection.vendor


def test_an_unsupported_database_is_named() -> None:
    class Oracle:
        vendor = "oracle"
        alias = "legacy"

    with pytest.raises(UnsupportedDatabase, match="'oracle' database \\(alias 'legacy'\\)"):
        vendor_of(Oracle())  # type: ignore[arg-type]
