"""docs/THREAT_MODEL.md and the tests agree: every test the model names exists, and every attack
test (tests/attacks/) is named by the model, so no threat is claimed without a test and no
attack test goes unexplained."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
MODEL = ROOT / "docs" / "THREAT_MODEL.md"
# `tests/x.py::test_name`, and the `::other_name` references that follow it in the same cell.
_CELL_REFS = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+\*?))?`((?:,\s*`::\w+\*?`)*)")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def _references() -> dict[str, set[str]]:
    """File -> test names (or name prefixes ending in *) the model refers to; "" for a file."""
    refs: dict[str, set[str]] = {}
    for match in _CELL_REFS.finditer(MODEL.read_text()):
        names = refs.setdefault(match.group(1), set())
        names.add(match.group(2) or "")
        names.update(re.findall(r"`::(\w+\*?)`", match.group(3)))
    return refs


def test_every_test_the_model_names_exists() -> None:
    refs = _references()
    assert len(refs) > 20
    for file, names in refs.items():
        path = ROOT / file
        assert path.is_file(), file
        defined = _tests_in(path)
        for name in names - {""}:
            if name.endswith("*"):
                assert any(d.startswith(name[:-1]) for d in defined), f"{file}::{name}"
            else:
                assert name in defined, f"{file}::{name}"


def test_every_attack_test_is_named_by_the_model() -> None:
    refs = _references()
    for path in sorted((ROOT / "tests" / "attacks").glob("test_*.py")):
        file = str(path.relative_to(ROOT))
        named = refs.get(file, set())
        if "" in named:
            continue  # the model names the whole file (each of its tests checks the same threat)
        for test in sorted(_tests_in(path)):
            assert test in named, f"{file}::{test} is not in docs/THREAT_MODEL.md"
