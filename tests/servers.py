"""Real servers on loopback for tests: privproc's own services and the Node interop peers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from privproc.system import LogDrain, System

NODE_DIR = Path(__file__).parent / "interop" / "node"


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str
    stderr_path: Path
    drain: LogDrain | None = None

    def logs(self) -> str:
        if self.drain is not None:
            self.drain.sync()  # everything the server wrote so far
        return self.stderr_path.read_text()


def _read_ready(proc: subprocess.Popen[str], marker: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
            continue
        if line.startswith(marker):
            return line[len(marker) :].strip()
    raise RuntimeError("server did not become ready in time")


@contextmanager
def privproc_process(
    args: list[str], marker: str, tmp: Path, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """Run `privproc ARGS` and wait for the line starting with `marker` (it carries the URL).

    Its standard error is a pipe copied to a file (as `privproc up` does: the enclave may write
    no file); `env` replaces the environment (the enclave accepts only its allowlist)."""
    stderr_path = tmp / f"stderr-{os.getpid()}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "privproc.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    drain = LogDrain(proc.stderr, stderr_path)
    try:
        url = _read_ready(proc, marker)
        yield Running(proc, url, stderr_path, drain)
    finally:
        stop_process(proc)
        drain.join()


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Ask a process to stop (SIGTERM); one still running 10 s later is killed."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def privproc_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`privproc ARGS...` run to its end, its output captured (the exit status unchecked)."""
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def running_system(state: Path, **options: Any) -> Iterator[System]:
    """A started System (with `options`), every AI feature enabled; stopped after."""
    from privproc.parties.device.controls import FEATURES, Settings

    running = System(state, **options)
    try:
        running.start()
        controls = Settings.load(running.client_dir)
        for feature in FEATURES:
            controls.set_feature(feature, True)
        controls.save()
        yield running
    finally:
        running.stop()


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node 20 is needed for the interop tests and was not found on PATH")
    modules = NODE_DIR / "node_modules"
    if not all((modules / m).exists() for m in ("hpke-js", "@cloudflare/privacypass-ts")):
        pytest.fail(
            "the Node interop packages are not installed: run "
            "`cd tests/interop/node && npm ci --ignore-scripts` (make test does this)"
        )
    return node


@contextmanager
def node_gateway() -> Iterator[str]:
    """The independent Node OHTTP echo gateway; yields its base URL."""
    node = node_or_fail()
    proc = subprocess.Popen(
        [node, "ohttp-gateway.mjs", "--port", "0"],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _read_ready(proc, "listening ")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def node_client(*args: str) -> subprocess.CompletedProcess[str]:
    node = node_or_fail()
    return subprocess.run(
        [node, "ohttp-client.mjs", *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REDIS_URL = os.environ.get("PRIVPROC_TEST_REDIS", "redis://127.0.0.1:6379/15")


def redis_or_fail() -> str:
    """The Redis URL the shared-store tests use, after checking that Redis answers there."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.fail(
            f"the Redis spent-token tests need a Redis server at {REDIS_URL} "
            f"(set PRIVPROC_TEST_REDIS to use another): {exc}"
        )
    finally:
        client.close()
    return REDIS_URL


@contextmanager
def app_in_thread(app: object, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """One of our ASGI apps served by uvicorn in a thread on loopback; yields its base URL.

    For tests that must instrument the app (wrap it, or give it an attacker's parts) and so
    cannot run it as its own `privproc serve` process."""
    import asyncio
    import threading

    from privproc.net.http import bind, make_server, url_of

    sock = bind(host, port)
    server = make_server(app)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def recording_tokens(client: Any, *also: list[str]) -> list[str]:
    """Note every token the device's `client` (either shell) takes for a session: in the list
    returned, and in each of `also` (tests search for them afterwards)."""
    spent: list[str] = []
    taking = client.path.payment.session_token

    def recording() -> Any:
        token = yield from taking()
        for into in (spent, *also):
            into.append(token)
        return token

    client.path.payment.session_token = recording
    return spent
