"""What runs inside the enclave: the import closure of its entry module, read from the source.

    files = closure(package_dir)          # paths relative to the package's parent, sorted
    lines = sum(count of each file's lines)

The enclave's release measures these files, and only these (`workload.py`): the
entry module (`ENTRY`, what `privproc serve enclave` runs), every privproc module it imports,
directly or through another, at the top of a file or inside a function, each package's
`__init__.py` on the way, and the data files that sit beside a module of the closure (the AMD
roots beside `attest/`). A change to the gateway, the device, the issuer or the command line is
not in it, so it is not a new enclave release.

Rules of this module:
- Static: the import statements are read with `ast`, nothing is imported or run. privproc imports
  no module of its own by a computed name (a test checks the closure covers every module the
  running enclave has loaded).
- Pure over the files it is given: same source, same closure, in a stable order.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from privproc.errors import UsageError

__all__ = ["ENTRY", "closure", "imported_names", "modules_of"]

ENTRY = "privproc.parties.enclave.main"
_DATA_SUFFIXES = (".pem", ".md", ".typed")


def _file_of(root: Path, module: str) -> Path | None:
    """The source file of a dotted module name under `root` (the package's parent), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(module: str, is_package: bool, tree: ast.Module) -> Iterator[str]:
    """Every name the module's import statements refer to, relative ones made absolute: each
    module, and for `from X import Y` also X.Y (a module or a name in one: the caller keeps those
    that are modules). `tests/test_layers.py` reads the package's layers with it too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def modules_of(root: Path, entry: str = ENTRY) -> dict[str, Path]:
    """Every privproc module the entry imports, transitively, with its file."""
    top = entry.split(".")[0]
    found: dict[str, Path] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in found or not (name == top or name.startswith(top + ".")):
            continue
        path = _file_of(root, name)
        if path is None:
            continue  # a name inside a module ("from privproc.errors import UsageError")
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages on the way
        tree = ast.parse(path.read_bytes(), str(path))
        todo += imported_names(name, path.name == "__init__.py", tree)
    if entry not in found:
        raise UsageError(f"the enclave's entry module {entry} is not under {root}")
    return found


def closure(package_dir: Path, entry: str = ENTRY) -> list[Path]:
    """The files the enclave runs, relative to the package's parent: the modules of `modules_of`
    and the data files in their directories (not in another package's), sorted."""
    root = package_dir.parent
    modules = modules_of(root, entry)
    files = set(modules.values())
    for directory in {path.parent for path in files}:
        for data in directory.rglob("*"):
            if (
                data.is_file()
                and data.suffix in _DATA_SUFFIXES
                and not _in_other_package(data, directory)
            ):
                files.add(data)
    return sorted(p.relative_to(root) for p in files)


def _in_other_package(data: Path, directory: Path) -> bool:
    """Whether a data file below `directory` sits in a sub-package (which has its own turn)."""
    for parent in data.relative_to(directory).parents:
        if parent != Path(".") and (directory / parent / "__init__.py").is_file():
            return True
    return False
