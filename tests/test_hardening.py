"""The enclave process hardens itself before it loads anything (privproc.parties.enclave.hardening):
real processes, real rlimits and prctl, real files and pipes.

The whole hardened enclave serving through `System` is exercised by tests/test_e2e.py and
tests/test_streaming.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from privproc.parties.enclave.hardening import (
    ENV_ALLOWLIST,
    HardeningError,
    check_allowlist,
    check_environment,
    enclave_environment,
    is_dangerous,
)
from privproc.parties.enclave.workload import enclave_config, enclave_manifest

VALUE_CANARY = "value-canary-5f3a9c"


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from privproc.parties.enclave.platform.virtual import VirtualSnp

    path = tmp_path_factory.mktemp("platform") / "platform"
    VirtualSnp.generate().save(path)
    return path


def _serve_enclave(platform_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`privproc serve enclave` with exactly `env`, its output captured through pipes."""
    args = ["serve", "enclave", "--host", "127.0.0.1", "--port", "0"]
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", *args, "--platform", str(platform_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LD_PRELOAD", "libc.so.6"),  # a real library: the loader itself says nothing
        ("PYTHONPATH", f"/nonexistent/{VALUE_CANARY}"),
        ("PRIVPROC_UNKNOWN_SETTING", VALUE_CANARY),
        ("http_proxy", f"http://{VALUE_CANARY}.invalid:3128"),
    ],
)
def test_the_enclave_refuses_an_environment_outside_its_allowlist(
    platform_dir: Path, name: str, value: str
) -> None:
    env = {**enclave_environment(os.environ), name: value}
    done = _serve_enclave(platform_dir, env)
    output = done.stdout + done.stderr
    flat = " ".join(output.split())  # the console may wrap the line
    assert done.returncode != 0
    assert "HardeningError" in flat
    assert name in flat
    assert value not in output
    assert "ready enclave" not in output
    assert "Traceback" not in output


def test_the_enclave_refuses_a_regular_file_for_its_stderr(
    platform_dir: Path, tmp_path: Path
) -> None:
    err = tmp_path / "enclave.err"
    args = ["serve", "enclave", "--host", "127.0.0.1", "--port", "0"]
    with err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "privproc.cli", *args, "--platform", str(platform_dir)],
            env=enclave_environment(os.environ),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    text = " ".join(err.read_text().split())
    assert "standard error is a regular file" in text
    assert "HardeningError" in text


def test_the_launch_environment_holds_only_the_allowlist() -> None:
    env = enclave_environment(
        {"PATH": "/usr/bin", "LD_PRELOAD": "x.so", "HOME": "/root", "PYTHONPATH": "/x"}
    )
    assert env == {"PATH": "/usr/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    check_environment(env)  # what a launcher builds passes


def test_dangerous_families_are_refused_whatever_the_allowlist_says() -> None:
    for name in (
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
        "PYTHONINSPECT", "PYTHONBREAKPOINT", "PYTHONMALLOC", "PYTHONWARNINGS", "PYTHONHASHSEED",
        "MALLOC_CHECK_", "GLIBC_TUNABLES", "OPENSSL_CONF", "OPENSSL_MODULES", "SSLKEYLOGFILE",
        "SSL_CERT_FILE", "GGML_SCHED_DEBUG", "LLAMA_CPP_LIB", "OMP_TOOL_LIBRARIES",
        "CUDA_INJECTION64_PATH", "GCONV_PATH", "LOCPATH", "https_proxy",
    ):  # fmt: skip
        assert is_dangerous(name), name
        with pytest.raises(HardeningError, match=name):
            check_allowlist([*ENV_ALLOWLIST, name])
        with pytest.raises(HardeningError, match="refused whatever the allowlist says"):
            check_environment({"PATH": "/usr/bin", name: VALUE_CANARY}, [*ENV_ALLOWLIST, "X"])
    for name in ENV_ALLOWLIST:
        assert not is_dangerous(name), name


def test_a_refusal_names_variables_never_values_and_stays_short() -> None:
    environ = {f"UNKNOWN_{i}": VALUE_CANARY for i in range(100)}
    environ["LD_PRELOAD"] = VALUE_CANARY
    with pytest.raises(HardeningError) as err:
        check_environment(environ)
    message = str(err.value)
    assert VALUE_CANARY not in message
    assert "LD_PRELOAD" in message
    assert "UNKNOWN_0" in message
    assert "more" in message
    assert len(message) < 1500


_CHILD = textwrap.dedent(
    """
    import ctypes, errno, json, os, resource, signal, sys
    from privproc.parties.enclave.hardening import dumpable, harden

    target = sys.argv[1]
    report = harden()
    out = {"measures": report.measures(), "core": resource.getrlimit(resource.RLIMIT_CORE),
           "fsize": resource.getrlimit(resource.RLIMIT_FSIZE), "dumpable": dumpable(),
           "bytecode_off": sys.dont_write_bytecode,
           "sigxfsz_ignored": signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN}
    with open("/proc/self/limits") as limits:
        out["limits_core"] = [l.split()[4:6] for l in limits if l.startswith("Max core file size")]
    with open("/proc/self/status") as status:
        out["no_new_privs"] = [l.split()[1] for l in status if l.startswith("NoNewPrivs:")]
    results = []
    for mode in (os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        fd = os.open(target, mode, 0o600)
        try:
            os.write(fd, b"secret")
            results.append("written")
        except OSError as exc:
            results.append(errno.errorcode[exc.errno])
        finally:
            os.close(fd)
    out["file_writes"] = results
    read_end, write_end = os.pipe()
    out["pipe_written"] = os.write(write_end, b"through a pipe")
    out["pipe_read"] = os.read(read_end, 100).decode()
    print(json.dumps(out))
    """
)


def test_after_harden_no_core_dumps_not_dumpable_and_no_file_writes(tmp_path: Path) -> None:
    target = tmp_path / "written-by-the-enclave"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(target)],
        env=enclave_environment(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # alive: SIGXFSZ did not kill it
    out = json.loads(done.stdout)
    assert out["measures"] == "env,core,dumpable,fsize,bytecode,nonewprivs"
    assert out["no_new_privs"] == ["1"]
    assert out["core"] == [0, 0]
    assert out["fsize"] == [0, 0]
    assert out["dumpable"] == 0
    assert out["bytecode_off"] is True
    assert out["sigxfsz_ignored"] is True
    assert out["limits_core"] == [["0", "0"]]
    assert out["file_writes"] == ["EFBIG", "EFBIG"]
    assert target.read_bytes() == b""  # opened, never written
    assert out["pipe_written"] == len(b"through a pipe")
    assert out["pipe_read"] == "through a pipe"


def test_harden_refuses_in_a_process_with_a_dangerous_variable() -> None:
    env = {**enclave_environment(os.environ), "PYTHONWARNINGS": VALUE_CANARY}
    done = subprocess.run(
        [sys.executable, "-c", "from privproc.parties.enclave.hardening import harden; harden()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "HardeningError" in done.stderr
    assert "PYTHONWARNINGS" in done.stderr


def test_the_allowlist_is_measured() -> None:
    config = enclave_config("SmolLM2-135M-Instruct", None)
    doc = json.loads(config)
    assert doc["version"] == 4  # 2 added the allowlist (4: the engine)
    assert doc["env_allowlist"] == sorted(ENV_ALLOWLIST)
    other = enclave_config("SmolLM2-135M-Instruct", None, [*ENV_ALLOWLIST, "TZ"])
    assert hashlib.sha384(config).digest() != hashlib.sha384(other).digest()
    assert enclave_manifest(None, config).measurement != enclave_manifest(None, other).measurement
    # The order and repeats of the allowlist do not matter; a dangerous name is refused.
    same = enclave_config("SmolLM2-135M-Instruct", None, [*reversed(ENV_ALLOWLIST), "PATH"])
    assert same == config
    with pytest.raises(HardeningError, match="LD_PRELOAD"):
        enclave_config("SmolLM2-135M-Instruct", None, [*ENV_ALLOWLIST, "LD_PRELOAD"])
