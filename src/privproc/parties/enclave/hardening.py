"""What the enclave process does to itself before it loads anything.

Rules: `harden()` runs first thing in `privproc serve enclave`, before logging is configured and
before the model, the platform or any request is touched, and either every measure below took or
it raises `HardeningError` (fail closed; there is no flag to skip it). It knows nothing about
HTTP, attestation or the model; it is plain process state, Linux only (the enclave is a CVM
workload).

1. The environment holds nothing outside `ENV_ALLOWLIST`. The allowlist is part of the enclave's
   measured configuration (`enclave_config`), so a build that accepts another environment has
   another measurement. A process can only refuse: a loader variable such as LD_PRELOAD has taken
   effect before Python runs, so the check catches a misconfigured launch rather than undoing it.
   The allowlist, and why each name is harmless:
     PATH                      the enclave executes no program; shells and launchers always set it.
     LANG, LC_ALL, LC_CTYPE    the text encoding of stdio (Python itself sets LC_CTYPE=C.UTF-8
                               under the C locale, PEP 538); locales come from system files only,
                               since LOCPATH is refused.
     PYTHONUNBUFFERED          stdio buffering only: log lines leave at once.
     PYTHONDONTWRITEBYTECODE   makes the interpreter write no bytecode cache (it writes no file).
   Left out on purpose: HOME (user site-packages outside a virtual environment, ~/.netrc for an
   HTTP client), TMPDIR (the enclave makes no file), TZ (a path to a file libc parses; logs use
   epoch seconds), TERM, and PYTHONHASHSEED (a fixed seed turns off hash randomisation and opens
   the JSON parser to hash flooding).
2. Whatever an allowlist says, these families are refused, and `check_allowlist` rejects an
   allowlist that names one (`DANGEROUS_NAMES`, `DANGEROUS_PREFIXES`):
     LD_*                      the dynamic loader: LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH load code;
                               LD_DEBUG, LD_PROFILE write out what the process does.
     GLIBC_TUNABLES, MALLOC_*  allocator knobs (and CVE-2023-4911's parser): they change how
                               freed secrets are reused or checked.
     GCONV_PATH, LOCPATH, NLSPATH, HOSTALIASES, RES_OPTIONS, LOCALDOMAIN
                               libc loads conversion modules or parses files named by them.
     PYTHON* (all but the two above)
                               PYTHONPATH, PYTHONHOME, PYTHONUSERBASE, PYTHONSTARTUP load code;
                               PYTHONINSPECT opens a prompt at exit; PYTHONBREAKPOINT names a
                               callable to import; PYTHONWARNINGS imports warning categories by
                               name; PYTHONMALLOC, PYTHONMALLOCSTATS, PYTHONFAULTHANDLER,
                               PYTHONTRACEMALLOC, PYTHONDEBUG, PYTHONVERBOSE change or print
                               memory and tracing state; PYTHONHASHSEED as above.
     OPENSSL_*, SSL*           OPENSSL_CONF and OPENSSL_MODULES load engines and providers (code);
                               SSLKEYLOGFILE writes TLS secrets, the attested session's keys;
                               SSL_CERT_FILE, SSL_CERT_DIR change whom the remote backend trusts.
     HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, NETRC, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE
                               send the remote backend's traffic elsewhere (any case).
     GGML_*, LLAMA_*           llama.cpp's debug and placement knobs; LLAMA_CPP_LIB picks the
                               native library llama-cpp-python loads.
     OMP_*, GOMP_*, KMP_*, CUDA_*
                               OpenMP and CUDA runtimes: OMP_TOOL_LIBRARIES and
                               CUDA_INJECTION64_PATH load code; OMP_DISPLAY_ENV prints.
   The error names the variables, never their values.
3. No core dumps and not dumpable: RLIMIT_CORE is (0, 0) and prctl(PR_SET_DUMPABLE, 0), checked
   by reading both back: no core file holds the model's inputs, and processes of the same user
   cannot ptrace the enclave or read its /proc/PID/mem.
4. No writes outside memory: RLIMIT_FSIZE is (0, 0) with SIGXFSZ ignored, so every write to a
   regular file fails with EFBIG (an OSError) instead of killing the process; pipes, sockets and
   terminals are not files and still work. The interpreter writes no bytecode cache
   (`sys.dont_write_bytecode`). Standard output and error must therefore not be regular files:
   that is checked first, while the refusal can still be written (`privproc up` gives the
   enclave pipes). Names are not content: an empty file can still be made, which is all the
   limit allows.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from privproc.errors import PrivprocError

__all__ = [
    "DANGEROUS_NAMES",
    "DANGEROUS_PREFIXES",
    "ENV_ALLOWLIST",
    "HardeningError",
    "HardeningReport",
    "check_allowlist",
    "check_environment",
    "check_streams",
    "dumpable",
    "enclave_environment",
    "forbid_core_dumps",
    "forbid_file_writes",
    "harden",
    "is_dangerous",
]

ENV_ALLOWLIST: tuple[str, ...] = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
)

DANGEROUS_PREFIXES: tuple[str, ...] = (
    "LD_",
    "MALLOC_",
    "GLIBC_",
    "PYTHON",
    "OPENSSL_",
    "SSL",
    "GGML_",
    "LLAMA_",
    "OMP_",
    "GOMP_",
    "KMP_",
    "CUDA_",
)
DANGEROUS_NAMES = frozenset(
    {
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "NETRC",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    }
)
# The PYTHON* variables that only buffer stdio or stop the interpreter writing files.
_PYTHON_HARMLESS = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})

_SHOWN_NAMES = 16  # an error names at most this many variables
_SHOWN_LENGTH = 64  # and each in at most this many characters

# prctl(2) options (linux/prctl.h).
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39


class HardeningError(PrivprocError):
    """The enclave process could not make itself safe to run; it does not start."""


@dataclass(frozen=True)
class HardeningReport:
    """Which measures took (`harden` raises rather than return one that did not)."""

    environment_allowlisted: bool
    core_dumps_off: bool
    not_dumpable: bool
    file_writes_off: bool
    bytecode_off: bool
    no_new_privileges: bool = False

    def measures(self) -> str:
        """A short identifier for the log: the measures that took, comma-separated."""
        names = {
            "env": self.environment_allowlisted,
            "core": self.core_dumps_off,
            "dumpable": self.not_dumpable,
            "fsize": self.file_writes_off,
            "bytecode": self.bytecode_off,
            "nonewprivs": self.no_new_privileges,
        }
        return ",".join(name for name, took in names.items() if took)


def is_dangerous(name: str) -> bool:
    """Whether a variable is refused whatever the allowlist says (compared in upper case)."""
    upper = name.upper()
    if upper in _PYTHON_HARMLESS:
        return False
    return upper in DANGEROUS_NAMES or upper.startswith(DANGEROUS_PREFIXES)


def check_allowlist(allowlist: Iterable[str]) -> tuple[str, ...]:
    """The allowlist, sorted and without repeats; refused if it names a dangerous variable."""
    names = tuple(sorted(set(allowlist)))
    bad = [name for name in names if is_dangerous(name) or not name or "=" in name]
    if bad:
        raise HardeningError(f"the environment allowlist names refused variables: {_show(bad)}")
    return names


def check_environment(environ: Mapping[str, str], allowlist: Iterable[str] = ENV_ALLOWLIST) -> None:
    """Refuse an environment with a variable outside the allowlist or a dangerous one."""
    allowed = set(check_allowlist(allowlist))
    dangerous = sorted(name for name in environ if is_dangerous(name))
    unknown = sorted(name for name in environ if name not in allowed and not is_dangerous(name))
    if not dangerous and not unknown:
        return
    parts = []
    if dangerous:
        parts.append(f"refused whatever the allowlist says: {_show(dangerous)}")
    if unknown:
        parts.append(f"not in the allowlist: {_show(unknown)}")
    raise HardeningError(
        "the enclave's environment holds variables it does not accept ("
        + "; ".join(parts)
        + f"); start it with at most {', '.join(sorted(allowed))} (`privproc up` does)"
    )


def enclave_environment(
    environ: Mapping[str, str], allowlist: Iterable[str] = ENV_ALLOWLIST
) -> dict[str, str]:
    """The environment a launcher gives the enclave: the allowlisted variables of `environ`,
    and PYTHONDONTWRITEBYTECODE=1 (so the interpreter does not try to write its cache)."""
    allowed = check_allowlist(allowlist)
    env = {name: environ[name] for name in allowed if name in environ}
    if "PYTHONDONTWRITEBYTECODE" in allowed:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_streams() -> None:
    """Standard output and error must not be regular files: the enclave cannot write files."""
    for fd, name in ((1, "standard output"), (2, "standard error")):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # closed: nothing is written anywhere
        if stat.S_ISREG(mode):
            raise HardeningError(
                f"the enclave's {name} is a regular file, and the enclave writes no file: "
                "give it a pipe, a socket or a terminal (`privproc up` gives it pipes)"
            )


def _prctl() -> Callable[..., int]:
    if not sys.platform.startswith("linux"):
        raise HardeningError("the enclave runs on Linux only (it needs prctl to stop ptrace)")
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's prctl
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def dumpable() -> int:
    """prctl(PR_GET_DUMPABLE): 0 once `forbid_core_dumps` took."""
    result = int(_prctl()(_PR_GET_DUMPABLE, 0, 0, 0, 0))
    if result < 0:
        raise HardeningError(f"prctl(PR_GET_DUMPABLE) failed: errno {ctypes.get_errno()}")
    return result


def forbid_core_dumps() -> None:
    """No core file, and no ptrace or /proc/PID/mem for processes of the same user."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        raise HardeningError(f"could not set RLIMIT_CORE to 0: {exc}") from None
    prctl = _prctl()
    if prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise HardeningError(f"prctl(PR_SET_DUMPABLE, 0) failed: errno {ctypes.get_errno()}")
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        raise HardeningError("RLIMIT_CORE did not stay at 0")
    if dumpable() != 0:
        raise HardeningError("the process is still dumpable after PR_SET_DUMPABLE")


def forbid_new_privileges() -> None:
    """PR_SET_NO_NEW_PRIVS: nothing this process runs can gain privileges (setuid, file caps)."""
    prctl = _prctl()
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise HardeningError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
    if prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise HardeningError("the process may still gain privileges after PR_SET_NO_NEW_PRIVS")


def forbid_file_writes() -> None:
    """Every write to a regular file fails with EFBIG; no bytecode cache is written."""
    sys.dont_write_bytecode = True
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    except (OSError, ValueError) as exc:
        raise HardeningError(f"could not set RLIMIT_FSIZE to 0: {exc}") from None
    if resource.getrlimit(resource.RLIMIT_FSIZE) != (0, 0):
        raise HardeningError("RLIMIT_FSIZE did not stay at 0")
    if signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN:
        raise HardeningError("SIGXFSZ is not ignored")


def harden(
    environ: Mapping[str, str] = os.environ, allowlist: Iterable[str] = ENV_ALLOWLIST
) -> HardeningReport:
    """Every measure of this module, in order; raises `HardeningError` at the first that fails.

    Call it from the main thread (it sets a signal disposition), before anything is loaded."""
    check_environment(environ, allowlist)
    check_streams()  # while a refusal can still be written
    forbid_core_dumps()
    forbid_new_privileges()
    forbid_file_writes()
    return HardeningReport(
        environment_allowlisted=True,
        core_dumps_off=True,
        not_dumpable=True,
        file_writes_off=True,
        bytecode_off=sys.dont_write_bytecode,
        no_new_privileges=True,
    )


def _show(names: list[str]) -> str:
    shown = [
        name if name.isprintable() and len(name) <= _SHOWN_LENGTH else ascii(name[:_SHOWN_LENGTH])
        for name in names[:_SHOWN_NAMES]
    ]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
