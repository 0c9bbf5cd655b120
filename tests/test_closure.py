"""The enclave measures its own code only (issue 17, point 1): the import closure of its entry,
`privproc.parties.enclave.main`. A change to the gateway, the device, the issuer or the command
line is no
new enclave release; a change to the enclave, or to a core it imports, is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import privproc
from privproc.parties.enclave.closure import ENTRY, closure, modules_of
from privproc.parties.enclave.hardening import enclave_environment
from privproc.parties.enclave.workload import enclave_code, enclave_config, enclave_manifest

PACKAGE = Path(privproc.__file__).parent
CONFIG = enclave_config("model")


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tree") / "privproc"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _measured(package: Path) -> bytes:
    return enclave_manifest(None, CONFIG, package).measurement


@pytest.mark.parametrize(
    ("path", "part_of_the_release"),
    [
        ("parties/gateway/service.py", False),
        ("parties/relay/service.py", False),
        ("parties/issuer/service.py", False),
        ("parties/device/private.py", False),
        ("cli/__init__.py", False),
        ("parties/gateway/commands.py", False),
        ("api.py", True),  # the contract the enclave speaks
        ("system.py", False),
        ("tlog/witness.py", False),
        ("parties/enclave/handler.py", True),
        ("parties/enclave/main.py", True),
        ("parties/enclave/inference/plans.py", True),
        ("ratls/tls.py", True),  # a core the enclave imports
        ("errors.py", True),
        ("attest/roots/ask_ark_milan.pem", True),  # data beside a module it runs
    ],
)
def test_only_what_the_enclave_runs_changes_its_release(
    copy: Path, path: str, part_of_the_release: bool
) -> None:
    before = _measured(copy)
    target = copy / path
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# an edit\n")
        assert (_measured(copy) != before) is part_of_the_release
    finally:
        target.write_bytes(original)
    assert _measured(copy) == before


def test_the_enclave_folder_is_what_runs_inside() -> None:
    """Every module in parties/enclave/ is in the closure (a reader who opens the folder reads
    only what runs inside), and no other party's is."""
    modules = modules_of(PACKAGE.parent)
    folder = PACKAGE / "parties" / "enclave"
    files = {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    inside = {p for name, p in modules.items() if name.startswith("privproc.parties.enclave")}
    assert files == inside
    assert {n.split(".")[2] for n in modules if n.startswith("privproc.parties.")} == {"enclave"}


def test_the_closure_is_the_entry_and_what_it_imports() -> None:
    modules = modules_of(PACKAGE.parent)
    assert ENTRY in modules
    assert {"privproc", "privproc.parties.enclave", "privproc.errors"} <= set(modules)
    outside = {"privproc.cli", "privproc.system", "privproc.parties.device.private",
               "privproc.parties.gateway.service", "privproc.parties.issuer.service"}  # fmt: skip
    assert not outside & set(modules)
    files = [str(path) for path in closure(PACKAGE)]
    assert files == sorted(files)
    assert "privproc/attest/roots/ask_ark_milan.pem" in files
    code = [path for path in enclave_code() if path.suffix == ".py"]
    everything = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    lines = sum(len(path.read_bytes().splitlines()) for path in code)
    total = sum(len(path.read_bytes().splitlines()) for path in everything)
    assert lines < total / 2  # what an auditor reads: well under half the package


def test_a_relative_import_and_an_import_inside_a_function_are_followed(tmp_path: Path) -> None:
    pkg = tmp_path / "privproc"
    enclave = pkg / "parties" / "enclave"
    enclave.mkdir(parents=True)
    for package in (pkg, pkg / "parties", enclave):
        (package / "__init__.py").write_text("")
    (enclave / "main.py").write_text("from . import helper\n")
    (enclave / "helper.py").write_text("def f():\n    from ...deep import g\n")
    (pkg / "deep.py").write_text("from privproc.errors import E\n")
    (pkg / "errors.py").write_text("class E(Exception): ...\n")
    (pkg / "unused.py").write_text("")
    assert [str(p) for p in closure(pkg)] == [
        "privproc/__init__.py",
        "privproc/deep.py",
        "privproc/errors.py",
        "privproc/parties/__init__.py",
        "privproc/parties/enclave/__init__.py",
        "privproc/parties/enclave/helper.py",
        "privproc/parties/enclave/main.py",
    ]


def test_the_running_enclave_loads_nothing_of_privproc_outside_its_closure(tmp_path: Path) -> None:
    """Started as `privproc serve enclave` starts it, with the interpreter naming every module it
    imports (-X importtime, on standard error): each privproc module is in the closure."""
    from privproc.parties.enclave.platform.virtual import VirtualSnp

    platform = tmp_path / "platform"
    VirtualSnp.generate().save(platform)
    argv = [sys.executable, "-X", "importtime", "-m", "privproc.cli", "serve", "enclave",
            "--port", "0", "--platform", str(platform)]  # fmt: skip
    process = subprocess.Popen(
        argv,
        env=enclave_environment(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = process.stderr
    assert stderr is not None
    drained: list[str] = []  # -X importtime writes much: read it as it comes, or the pipe fills
    reader = threading.Thread(target=lambda: drained.extend(stderr), daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line.startswith("ready enclave"):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
        assert line.startswith("ready enclave"), line
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=60)
    err = "".join(drained)
    # Two processes wrote there: the command line, then (after exec) the enclave's entry, whose
    # interpreter starts again with `site`.
    rows = err.splitlines()
    starts = [i for i, row in enumerate(rows) if row.startswith("import time:") and
              row.rstrip().endswith("| site")]  # fmt: skip
    assert len(starts) == 2, "the command line did not hand over to the enclave's entry"
    loaded = {
        row.rsplit("|", 1)[-1].strip()
        for row in rows[starts[1] :]
        if row.startswith("import time:")
    }
    loaded = {name for name in loaded if name.split(".")[0] == "privproc"}
    assert (
        "privproc.parties.enclave.service" in loaded
    )  # the entry ran (as __main__, so unnamed here)
    measured = set(modules_of(PACKAGE.parent))
    assert loaded <= measured, sorted(loaded - measured)


def test_the_command_line_says_what_the_release_measures() -> None:
    from click.testing import CliRunner

    from privproc.cli import main

    done = CliRunner().invoke(main, ["attest", "closure", "--list"])
    assert done.exit_code == 0, done.output
    modules = [p for p in enclave_code() if p.suffix == ".py"]
    assert f"the enclave runs {len(modules)} of privproc's" in done.output
    listed = [line.split()[-1] for line in done.output.splitlines()[1:]]
    assert listed == [str(p) for p in closure(PACKAGE)]
