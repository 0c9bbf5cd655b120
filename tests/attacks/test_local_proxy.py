"""A web page the user visits attacks the device's local OpenAI endpoint (`privproc proxy`): it
makes the browser POST to 127.0.0.1 (a cross-origin "simple" request needs no permission), or
rebinds its own name to 127.0.0.1 to read the answers. Either would spend the user's tokens and
fill their report. The attacker here sends exactly what a browser would send; nothing may reach
the relay. (The proxy is a real process over a real system on loopback.)"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from privproc.parties.device.controls import UsageReport
from privproc.system import System
from tests.servers import Running, privproc_process

CHAT = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4}  # fmt: skip


@contextmanager
def _proxy(system: System, tmp_path: Path, *extra: str) -> Iterator[Running]:
    args = ["proxy", "--port", "0", "--state", str(system.state), *extra]
    with privproc_process(args, "ready proxy ", tmp_path) as proxy:
        yield proxy


@contextmanager
def _nothing_forwarded(system: System) -> Iterator[None]:
    """The relay forwards nothing and the report gains nothing while the block runs."""
    relay = system.party("relay")
    forwarded = relay.logs().count('"forward"')
    used = len(UsageReport(system.client_dir).entries())
    yield
    assert relay.logs().count('"forward"') == forwarded
    assert len(UsageReport(system.client_dir).entries()) == used


def _port(proxy: Running) -> int:
    return httpx.URL(proxy.url).port or 80


def test_a_web_page_cannot_post_to_the_proxy(system: System, tmp_path: Path) -> None:
    with _proxy(system, tmp_path) as proxy, _nothing_forwarded(system):
        page = {"origin": "https://evil.example"}
        # The "simple" request a page can send without a preflight: text/plain, any body.
        simple = httpx.post(
            proxy.url + "/chat/completions",
            content=json.dumps(CHAT),
            headers={**page, "content-type": "text/plain"},
        )
        assert simple.status_code == 403
        assert simple.json()["error"]["type"] == "permission_error"
        assert "evil.example" not in simple.text  # nothing the request said is echoed
        declared = httpx.post(proxy.url + "/chat/completions", json=CHAT, headers=page)
        assert declared.status_code == 403
        listed = httpx.get(proxy.url + "/models", headers=page)
        assert listed.status_code == 403
        # Without an Origin (not a browser page) a body must still be declared JSON.
        plain = httpx.post(
            proxy.url + "/chat/completions",
            content=json.dumps(CHAT),
            headers={"content-type": "text/plain"},
        )
        assert plain.status_code == 415
        # A preflight, which a page needs for JSON, is never granted.
        preflight = httpx.options(proxy.url + "/chat/completions", headers={
            **page, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type"})  # fmt: skip
        assert preflight.status_code >= 400
        assert "access-control-allow-origin" not in preflight.headers


def test_a_rebound_name_cannot_reach_the_proxy(system: System, tmp_path: Path) -> None:
    """DNS rebinding: the page's own name now resolves to 127.0.0.1, so its requests are
    same-origin for the browser; only the Host header still says whom they are for."""
    with _proxy(system, tmp_path) as proxy, _nothing_forwarded(system):
        rebound = {"host": f"evil.example:{_port(proxy)}"}
        assert httpx.get(proxy.url + "/models", headers=rebound).status_code == 421
        answer = httpx.post(proxy.url + "/chat/completions", json=CHAT, headers=rebound)
        assert answer.status_code == 421
        for host in (
            f"127.0.0.1:{_port(proxy) + 1}",
            "localhost",
            f"127.0.0.1.evil.example:{_port(proxy)}",
        ):
            assert httpx.get(proxy.url + "/models", headers={"host": host}).status_code == 421


def test_what_the_user_allows_still_works(system: System, tmp_path: Path) -> None:
    allowed = "https://app.example"
    with _proxy(system, tmp_path, "--allow-origin", allowed) as proxy:
        for host in ("127.0.0.1", "localhost"):
            url = proxy.url.replace("127.0.0.1", host)
            assert httpx.get(url + "/models").status_code == 200
        assert httpx.get(proxy.url + "/models", headers={"origin": allowed}).status_code == 200
        other = httpx.get(proxy.url + "/models", headers={"origin": "https://app.example.evil"})
        assert other.status_code == 403
        ai = openai.OpenAI(base_url=proxy.url, api_key="unused", max_retries=0)
        assert [m.id for m in ai.models.list()] == ["SmolLM2-135M-Instruct"]


def test_with_a_key_only_its_holder_gets_through(system: System, tmp_path: Path) -> None:
    with _proxy(system, tmp_path, "--require-key") as proxy:
        key_file = system.client_dir / "proxy.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert str(key_file) in proxy.logs()
        assert key not in proxy.logs()  # said where it is, never what it is
        with _nothing_forwarded(system):
            assert httpx.get(proxy.url + "/models").status_code == 401
            wrong = {"authorization": "Bearer " + key[:-1] + ("A" if key[-1] != "A" else "B")}
            assert httpx.get(proxy.url + "/models", headers=wrong).status_code == 401
        ai = openai.OpenAI(base_url=proxy.url, api_key=key, max_retries=0)
        assert [m.id for m in ai.models.list()] == ["SmolLM2-135M-Instruct"]
    with _proxy(system, tmp_path, "--require-key"):
        assert (system.client_dir / "proxy.key").read_text().strip() != key  # one per launch


def test_the_proxy_listens_on_loopback_unless_told_otherwise(
    system: System, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "privproc.cli", "proxy", "--host", "0.0.0.0", "--port", "0",
         "--state", str(system.state)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr
    assert "--allow-remote" in refused.stderr
    # Told otherwise: a printed warning, and a key is required. (Reached here over loopback.)
    with _proxy(system, tmp_path, "--host", "0.0.0.0", "--allow-remote") as proxy:
        assert "warning:" in proxy.logs()
        url = f"http://127.0.0.1:{_port(proxy)}/v1"
        assert httpx.get(url + "/models").status_code == 401
        key = (system.client_dir / "proxy.key").read_text().strip()
        answer = httpx.get(url + "/models", headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200
