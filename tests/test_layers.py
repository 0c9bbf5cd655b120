"""The package's layers, read from its source (issue 17; docs/ARCHITECTURE.md has the map):

- the base and the sans-IO cores import nothing above them and no network library;
- the contract (`privproc.api`) imports only the base;
- the shells (`privproc.net`) import no party, no CLI, no system;
- a party imports the base, the cores, the contract and the shells, never another party;
- only the CLI imports `privproc.system`, and nothing imports the CLI;
- the sans-IO party modules (`SANS_IO`) import no I/O library and no I/O shell.

Also: errors are raised from the one hierarchy, and every module opens with the rules it keeps.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

import pytest

from privproc.parties.enclave.closure import imported_names

PACKAGE = Path(__file__).parent.parent / "src" / "privproc"

BASE = frozenset(("errors", "limits", "wire"))
CORES = frozenset(("hpke", "ohttp", "tokens", "tlog", "attest", "ratls", "storage", "logs"))
# Libraries a base module, a core or the contract never imports: sockets, HTTP, servers, the CLI.
NETWORK = frozenset(("socket", "ssl", "asyncio", "httpx", "h11", "starlette", "uvicorn", "urllib",
                     "http", "requests", "redis", "click"))  # fmt: skip
PARTIES = frozenset(("device", "relay", "gateway", "issuer", "enclave", "log", "witness", "cdn"))
# Party modules written sans-IO (issue 17): the device's connection, the private path as steps
# (with what the log vouches for and how a session is paid), and the steps' needs. They import
# no I/O library and no shell that does I/O; only h11 (itself sans-IO), the needs
# (`net.steps`) and the evidence events' helpers (`net.ratls`).
SANS_IO = frozenset(("privproc.net.steps", "privproc.parties.device.connection",
                     "privproc.parties.device.path", "privproc.parties.device.logged",
                     "privproc.parties.device.payment"))  # fmt: skip
SANS_IO_NET = frozenset(("privproc.net.steps", "privproc.net.ratls"))


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
    """'base', 'core', 'api', 'net', 'party:NAME', 'cli', 'system', 'root' or 'outside'."""
    parts = module.split(".")
    if parts[0] != "privproc":
        return "outside"
    if len(parts) == 1 or parts[1] == "__init__":
        return "root"
    top = parts[1]
    if top in BASE:
        return "base"
    if top in CORES:
        return "core"
    if top == "parties":
        return f"party:{parts[2]}" if len(parts) > 2 else "parties"
    return top


def _allowed(importer: str, imported: str) -> bool:
    """May a module of layer `importer` import one of layer `imported`?"""
    if imported == "outside":
        return True
    if importer in ("base", "core"):
        return imported in ("base", "core", "root")
    if importer == "api":
        return imported in ("base", "root")
    if importer == "net":
        return imported in ("base", "core", "api", "net", "root")
    if importer.startswith("party:"):
        return imported in ("base", "core", "api", "net", "root", "parties", importer)
    if importer == "system":
        return imported != "cli"
    if importer == "cli":
        return True
    return imported in ("base", "root")  # the package files of privproc and privproc.parties


def _violations(name: str, tree: ast.Module, is_package: bool = False) -> set[str]:
    layer = _layer(name)
    found = set()
    for imported in imported_names(name, is_package, tree):
        if (
            not _allowed(layer, _layer(imported))
            or (layer in ("base", "core", "api") and imported.split(".")[0] in NETWORK)
            or (
                name in SANS_IO
                and (
                    imported.split(".")[0] in NETWORK - {"h11"}
                    or (_layer(imported) == "net" and not imported.startswith(tuple(SANS_IO_NET)))
                )
            )
        ):
            found.add(imported)
    return found


def test_every_module_is_in_a_known_layer() -> None:
    layers = {_layer(name) for name, _, _ in _modules()}
    parties = {layer.removeprefix("party:") for layer in layers if layer.startswith("party:")}
    assert parties == PARTIES
    assert layers - {f"party:{p}" for p in PARTIES} == {
        "root", "base", "core", "api", "net", "parties", "cli", "system"
    }  # fmt: skip


def test_layers_hold() -> None:
    offenders = {}
    for name, tree, is_package in _modules():
        if bad := _violations(name, tree, is_package):
            offenders[name] = sorted(bad)
    assert offenders == {}


@pytest.mark.parametrize(
    ("module", "source", "forbidden"),
    [
        ("privproc.ohttp.x", "import socket\nfrom privproc.parties.device import private\n"
         "from . import keys\nfrom privproc import wire\n",
         {"socket", "privproc.parties.device", "privproc.parties.device.private"}),
        ("privproc.tlog.x", "from privproc.net.client import get\nimport httpx\n",
         {"privproc.net.client", "privproc.net.client.get", "httpx"}),
        ("privproc.api", "from privproc.tokens import auth\nfrom privproc.errors import E\n",
         {"privproc.tokens", "privproc.tokens.auth"}),
        ("privproc.net.x", "from privproc.parties.gateway import service\nimport httpx\n",
         {"privproc.parties.gateway", "privproc.parties.gateway.service"}),
        ("privproc.parties.device.x", "from privproc.parties.enclave.inference import models\n"
         "from privproc.net import http\nfrom privproc.api import ModelCard\n"
         "from . import wallet\n",
         {"privproc.parties.enclave.inference", "privproc.parties.enclave.inference.models"}),
        ("privproc.parties.gateway.x", "from privproc import system\nfrom privproc import cli\n",
         {"privproc.system", "privproc.cli"}),
        ("privproc.system", "from privproc.cli import main\nfrom privproc.parties.log import x\n",
         {"privproc.cli", "privproc.cli.main"}),
        ("privproc.parties.device.connection", "import h11\nimport asyncio\n"
         "from privproc.net.drivers import Driver\nfrom privproc.net.steps import Step\n",
         {"asyncio", "privproc.net.drivers", "privproc.net.drivers.Driver"}),
        ("privproc.parties.device.path", "import httpx\nfrom privproc.net import client\n",
         {"httpx", "privproc.net", "privproc.net.client"}),
    ],
)  # fmt: skip
def test_the_check_sees_a_forbidden_import(module: str, source: str, forbidden: set[str]) -> None:
    assert _violations(module, ast.parse(source)) == forbidden


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
