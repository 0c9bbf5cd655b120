"""The package's layers, read from its source (issue 17): the protocol cores never import a party,
a shell or the CLI, and open no socket or HTTP client; errors are raised from the one hierarchy;
every module opens with the rules it keeps.

The known exceptions (`DEBTS`) are listed by name, with what moves them: the test fails when a
new one appears, and also when a listed one is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

from privproc.enclave.closure import imported_names

PACKAGE = Path(__file__).parent.parent / "src" / "privproc"

# Sans-IO cores (DESIGN.md section 5) and what sits above them.
CORES = frozenset(
    ("errors", "limits", "wire", "hpke", "ohttp", "tokens", "tlog", "attest", "ratls", "storage",
     "logs")
)  # fmt: skip
ABOVE = frozenset(("client", "services", "enclave", "inference", "issuer", "cli", "system"))
NETWORK = frozenset(("socket", "ssl", "asyncio", "httpx", "h11", "starlette", "uvicorn", "urllib",
                     "http", "requests", "redis"))  # fmt: skip
DEBTS = {
    "privproc.tlog.publisher": "writes tiles for the CDN: moves to the log party (issue 17)",
    "privproc.tokens.spent": "the spent-token stores (SQLite, Redis) are the gateway's state: "
    "they move to the gateway party (issue 17)",
}


def _modules(packages: bool = True) -> Iterator[tuple[str, ast.Module, bool]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            if not packages:
                continue
            parts.pop()
        yield ".".join(parts), ast.parse(path.read_text(), str(path)), is_package


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(name: str, tree: ast.Module, is_package: bool = False) -> set[str]:
    found = set()
    for imported in imported_names(name, is_package, tree):
        top = imported.split(".")[0]
        if (top == "privproc" and _layer(imported) in ABOVE) or top in NETWORK:
            found.add(imported)
    return found


def test_cores_import_no_party_shell_or_network() -> None:
    offenders = {}
    for name, tree, is_package in _modules():
        if _layer(name) in CORES and (bad := _violations(name, tree, is_package)):
            offenders[name] = sorted(bad)
    assert set(offenders) == set(DEBTS), offenders


def test_the_check_sees_a_forbidden_import() -> None:
    tree = ast.parse("import socket\nfrom privproc.client import private\nfrom . import wire\n")
    assert _violations("privproc.ohttp.x", tree) == {
        "socket",
        "privproc.client",
        "privproc.client.private",
    }


def _raises(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                yield node.lineno, exc.id


def test_errors_come_from_the_one_hierarchy() -> None:
    """No bare `ValueError` (or another builtin) raised on purpose: callers catch
    `PrivprocError` subclasses. `NotImplementedError` marks an abstract method; a signal may
    still become `KeyboardInterrupt` (not an `Exception`)."""
    builtin = {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    offenders = [
        f"{name}:{line} raises {exc}"
        for name, tree, _ in _modules()
        for line, exc in _raises(tree)
        if exc in builtin - {"NotImplementedError"}
    ]
    assert offenders == []


def test_every_module_states_its_rules() -> None:
    missing = [
        name
        for name, tree, _ in _modules(packages=False)
        if len((ast.get_docstring(tree) or "").splitlines()) < 2
    ]
    assert missing == []
