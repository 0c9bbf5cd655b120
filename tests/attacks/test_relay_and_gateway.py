"""Attacks from the relay's and the operator's positions on the wire, against the real stack.

Actors: a malicious relay (it holds the client's connection and every OHTTP message), and a
malicious operator (it holds the gateway: the OHTTP keys, the session routing, and every TLS
record between the client and the enclave, which it can alter, reorder, replay, drop, or send
to an enclave of its choosing). Asset: the content of the person's request and of the answer.

What must hold, every time: the attack fails closed (a typed error at the client), the enclave
never processes a tampered or replayed request, the client never accepts an altered answer, and
nothing the attacker saw contains the content. The operator's link (tests/operator_link.py)
sits between the real gateway and the genuine enclave build, which runs in this process.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.attest.appraisal import AttestationRejectedError
from privproc.attest.snp import GuestPolicy
from privproc.errors import CryptoError, PeerRejectedError, PrivprocError
from privproc.parties.device.private import ClientConfig, PrivateProcessingClient
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.system import System
from tests.operator_link import Link, enclave_behind, flip, genuine_provider, records
from tests.servers import app_in_thread, recording_tokens

DOOR_CODE = "73q5z1"  # letters among the digits: no timestamp, port or pid in a log can hold it
CANARY = f"canary-attack-9e41: the door code is {DOOR_CODE}"
CHAT = [
    {"sender": "Ana", "time": "09:00", "text": f"here it is: {CANARY}"},
    {"sender": "Ben", "time": "09:01", "text": "thanks, see you at the station at 7"},
]


SPENT: list[str] = []  # every token the attacks' clients spent, to search for at the end
LOGGED: list[str] = []  # every log line of the parties running in this process


def _client(system: System, **changes: Any) -> PrivateProcessingClient:
    """The real client, connecting from 127.0.0.2 (so its address can be searched for)."""
    config = dataclasses.replace(ClientConfig.load(system.client_dir / "client.json"), **changes)
    http = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=300)
    client = PrivateProcessingClient(config, system.client_dir, http=http)
    recording_tokens(client, SPENT)
    return client


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LOGGED.append(record.getMessage())


@pytest.fixture(scope="module", autouse=True)
def _keep_logs() -> Iterator[None]:
    handler, logger = _Keep(), logging.getLogger("privproc")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


def _served(caplog: pytest.LogCaptureFixture) -> int:
    """How many API requests the in-process enclave has answered (its content-free log)."""
    return sum('"event":"request"' in r.getMessage() for r in caplog.records)


@pytest.fixture
def enclave_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="privproc")
    return caplog


def _refused_before_any_request(
    system: System,
    enclave_log: pytest.LogCaptureFixture,
    link: Link,
    provider: Any = None,
    failed: list[str] | None = None,
) -> None:
    """The attack behind `link` (and `provider`) stops the client with a typed error before
    any request reaches the enclave's API; with `failed`, it is exactly these attestation
    checks that failed."""
    with enclave_behind(system, link, provider):
        client = _client(system)
        with pytest.raises(AttestationRejectedError if failed else PrivprocError) as err:
            client.summarize(CHAT)
        if failed is not None:
            assert isinstance(err.value, AttestationRejectedError)
            assert [c.id for c in err.value.report.failures] == failed
        assert _served(enclave_log) == 0  # no request was ever sent
        client.close()


# --- The relay ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordingRelay:
    """A relay that keeps a copy of everything and may alter what it forwards."""

    gateway: str
    alter_request: bool = False
    alter_response: bool = False
    seen: list[bytes] = dataclasses.field(default_factory=list)

    def app(self) -> Starlette:
        async def relay(request: Request) -> Response:
            body = await request.body()
            self.seen.append(body)
            async with httpx.AsyncClient(timeout=60) as http:
                kind = request.headers["content-type"]
                sent = flip(body, len(body) - 1) if self.alter_request else body
                answer = await http.post(self.gateway, content=sent, headers={"content-type": kind})
            back = answer.content
            self.seen.append(back)
            if self.alter_response and back:
                back = flip(back, len(back) - 1)
            return Response(back, answer.status_code, media_type=answer.headers.get("content-type"))

        return Starlette(routes=[Route("/", relay, methods=["POST"])])


def _gateway(system: System) -> str:
    return next(p.url for p in system.parties if p.name == "gateway")


def test_the_relay_sees_only_ciphertext(system: System) -> None:
    relay = RecordingRelay(_gateway(system))
    with app_in_thread(relay.app()) as url:
        client = _client(system, relay_url=url)
        assert client.summarize(CHAT).text
        client.close()
    seen = b"".join(relay.seen)
    assert len(relay.seen) >= 6  # the session's messages both ways
    secrets_ = (CANARY.encode(), DOOR_CODE.encode(), b"PrivateToken", b"door code", b"summarize")
    for secret in secrets_:
        assert secret not in seen


@pytest.mark.parametrize("where", ["request", "response"])
def test_the_relay_alters_a_message(system: System, where: str) -> None:
    relay = RecordingRelay(
        _gateway(system), alter_request=where == "request", alter_response=where == "response"
    )
    with app_in_thread(relay.app()) as url:
        client = _client(system, relay_url=url)
        # An altered request is one bare 400 from the gateway; an altered answer fails to open.
        expected = PeerRejectedError if where == "request" else CryptoError
        with pytest.raises(expected):
            client.summarize(CHAT)
        client.close()


# --- The operator: TLS records between the gateway and the enclave -----------------------------


def _armed(link: Link, attack: Any, direction: str) -> None:
    """Arm `attack` on the link for the exchanges after the session's handshake."""
    setattr(link, direction, attack)


def _application_exchange(method: str, path: str) -> bool:
    return method == "POST" and not path.endswith("/stream")


def test_the_gateway_alters_a_record_to_the_enclave(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    link = Link()
    with enclave_behind(system, link):
        client = _client(system)
        assert client.chat("Say hello.", max_tokens=4).text  # a genuine, verified session
        served = _served(enclave_log)

        def alter(method: str, path: str, data: bytes) -> bytes:
            return flip(data, len(data) - 1) if _application_exchange(method, path) else data

        _armed(link, alter, "to_enclave")
        with pytest.raises(PrivprocError):
            client.summarize(CHAT)
        assert _served(enclave_log) == served  # the altered request was never processed
        _armed(link, lambda m, p, d: d, "to_enclave")
        assert client.summarize(CHAT).text  # the next session is clean
        client.close()


def test_the_gateway_alters_the_answer(system: System) -> None:
    link = Link()
    with enclave_behind(system, link):
        client = _client(system)
        assert client.chat("Say hello.", max_tokens=4).text

        def alter(method: str, path: str, data: bytes) -> bytes:
            return flip(data, len(data) - 2) if _application_exchange(method, path) else data

        _armed(link, alter, "to_gateway")
        with pytest.raises(PrivprocError):
            client.summarize(CHAT)  # never an altered summary
        client.close()


def test_the_gateway_reorders_the_enclaves_records(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    def swap(method: str, path: str, data: bytes) -> bytes:
        parts = records(data)
        if method == "PUT" and len(parts) >= 2:
            parts[0], parts[1] = parts[1], parts[0]
        return b"".join(parts)

    _refused_before_any_request(system, enclave_log, Link(to_gateway=swap))


def test_the_gateway_replays_a_request(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    link = Link()
    with enclave_behind(system, link) as enclave:
        client = _client(system)
        assert client.summarize(CHAT).text
        served = _served(enclave_log)
        _, path, sent, _ = next(s for s in reversed(link.seen) if s[0] == "POST")
        replayed = httpx.post(enclave + path, content=sent)  # the same records, again
        assert _served(enclave_log) == served  # processed once, not twice
        assert CANARY.encode() not in replayed.content
        client.close()


def test_the_gateway_replays_a_whole_captured_session(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    link = Link()
    with enclave_behind(system, link) as enclave:
        client = _client(system)
        assert client.summarize(CHAT).text
        client.close()
        captured = [s for s in link.seen if s[0] in ("PUT", "POST")]
        served = _served(enclave_log)
        session = "/sessions/" + "7e" * 16
        answers = []
        for method, _, sent, _ in captured:
            answers.append(httpx.request(method, enclave + session, content=sent))
        # The enclave's fresh handshake does not match the captured one: its session fails at
        # the client's Finished, and the captured request is never opened.
        assert _served(enclave_log) == served
        assert answers[-1].status_code == 404 or CANARY.encode() not in answers[-1].content


def test_the_gateway_drops_the_request(system: System) -> None:
    link = Link()
    with enclave_behind(system, link):
        client = _client(system)
        assert client.chat("Say hello.", max_tokens=4).text

        def drop(method: str, path: str, data: bytes) -> bytes | None:
            return None if _application_exchange(method, path) else data

        _armed(link, drop, "to_enclave")
        with pytest.raises(PrivprocError, match="did not answer"):
            client.summarize(CHAT)
        client.close()


def _client_hello_suites(hello: bytes) -> tuple[int, int]:
    """(offset, length) of the cipher-suite list in a ClientHello record."""
    pos = 5 + 4 + 2 + 32  # record header, handshake header, legacy version, random
    pos += 1 + hello[pos]  # legacy session id
    length = int.from_bytes(hello[pos : pos + 2], "big")
    return pos + 2, length


def test_the_gateway_downgrades_the_cipher_suite(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    """The operator reorders the ClientHello's suites so that the weakest comes first: the
    transcript no longer matches, so the handshake fails before any content."""

    def weaken(method: str, path: str, data: bytes) -> bytes:
        if method != "PUT":
            return data
        start, length = _client_hello_suites(data)
        suites = [data[i : i + 2] for i in range(start, start + length, 2)]
        return data[:start] + b"".join(reversed(suites)) + data[start + length :]

    _refused_before_any_request(system, enclave_log, Link(to_enclave=weaken))


def test_the_gateway_offers_only_tls_1_2(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    def tls12(method: str, path: str, data: bytes) -> bytes:
        # supported_versions (0x002b) lists TLS 1.3 (0x0304): make it TLS 1.2 (0x0303).
        return data.replace(b"\x00\x2b\x00\x03\x02\x03\x04", b"\x00\x2b\x00\x03\x02\x03\x03")

    _refused_before_any_request(system, enclave_log, Link(to_enclave=tls12))


# --- The operator: enclaves the client must refuse ---------------------------------------------


class _LaunchedWith(VirtualSnp):
    """The genuine platform, but the guest launched with another policy or at another VMPL."""

    policy: GuestPolicy | None = None
    vmpl_used: int = 0

    def report(self, report_data: bytes, measurement: bytes, **kw: Any) -> bytes:
        kw.setdefault("policy", self.policy)
        kw.setdefault("vmpl", self.vmpl_used)
        return super().report(report_data, measurement, **kw)


def _platform(system: System, **launch: Any) -> VirtualSnp:
    genuine = VirtualSnp.load(system.system_dir / "platform")
    platform = _LaunchedWith(
        **{f.name: getattr(genuine, f.name) for f in dataclasses.fields(genuine)}
    )
    for name, value in launch.items():
        object.__setattr__(platform, name, value)
    return platform


@pytest.mark.parametrize(
    ("launch", "failed"),
    [
        (
            {"policy": GuestPolicy.build(abi_major=1, abi_minor=55, smt=True, debug=True)},
            "policy.debug",
        ),
        (
            {"policy": GuestPolicy.build(abi_major=1, abi_minor=55, smt=True, migrate_ma=True)},
            "policy.migration-agent",
        ),
        ({"vmpl_used": 2}, "policy.vmpl"),
    ],
    ids=["debug", "migration-agent", "vmpl"],
)
def test_the_gateway_routes_to_an_enclave_launched_unsafely(
    system: System, enclave_log: pytest.LogCaptureFixture, launch: dict[str, Any], failed: str
) -> None:
    provider = genuine_provider(system, _platform(system, **launch))
    _refused_before_any_request(system, enclave_log, Link(), provider, [failed])


def test_the_gateway_routes_to_an_unlogged_build(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    """Genuine hardware, genuine evidence, but another build (here: another configuration) than
    the logged release: log.release fails and nothing reaches its API."""
    from privproc.api import SessionPolicy
    from privproc.parties.enclave.inference.backends import MODEL_NAME, locate_smollm2
    from privproc.parties.enclave.platform.provider import EvidenceProvider
    from privproc.parties.enclave.workload import enclave_config, enclave_manifest

    genuine = genuine_provider(system)
    config = enclave_config(MODEL_NAME, SessionPolicy(max_sessions=9))
    other = enclave_manifest(locate_smollm2(), config)
    provider = EvidenceProvider(genuine.platform, other, genuine.release)
    _refused_before_any_request(system, enclave_log, Link(), provider, ["log.release"])


def test_the_gateway_staples_evidence_from_another_session(
    system: System, enclave_log: pytest.LogCaptureFixture
) -> None:
    """The operator replays evidence the genuine enclave produced for another session."""
    import os

    genuine = genuine_provider(system)
    recorded = genuine(os.urandom(64))
    _refused_before_any_request(
        system, enclave_log, Link(), lambda report_data: recorded, ["policy.report-data"]
    )


def test_an_enclave_below_the_clients_minimum_tcb_is_refused(system: System) -> None:
    platform = VirtualSnp.load(system.system_dir / "platform")
    tcb = platform.tcb
    higher = (("bootloader", tcb.bootloader), ("tee", tcb.tee), ("snp", tcb.snp + 1),
              ("microcode", tcb.microcode))  # fmt: skip
    client = _client(system, min_tcb=((platform.product.value, higher),))
    with pytest.raises(AttestationRejectedError) as err:
        client.summarize(CHAT)
    assert [c.id for c in err.value.report.failures] == ["policy.min-tcb"]
    client.close()
    # At the platform's own level it passes: the check compares, it does not just refuse.
    same = tuple((k, v) if k != "snp" else (k, tcb.snp) for k, v in higher)
    ok = _client(system, min_tcb=((platform.product.value, same),))
    assert ok.summarize(CHAT).text
    ok.close()


def test_a_simulated_enclave_is_refused_without_permission(system: System) -> None:
    """A client whose trust anchors do not name the virtual root accepts only AMD's."""
    client = _client(system, hardware_roots=())
    with pytest.raises(AttestationRejectedError) as err:
        client.summarize(CHAT)
    assert any(c.id.startswith("chain.") for c in err.value.report.failures)
    client.close()


def test_nothing_the_attacks_touched_holds_the_content(system: System) -> None:
    """After every attack above: the parties' files and logs (the processes' log files and the
    log lines of the enclaves run here), and the client's state, hold no canary, no door code, no
    client address, and none of the tokens spent (as sent, or their nonces)."""
    assert SPENT  # the attacks did spend tokens
    secrets_ = [CANARY.encode(), DOOR_CODE.encode(), b"127.0.0.2"]
    for token in SPENT:
        value = token.split('"')[1]
        secrets_ += [value.encode(), base64.urlsafe_b64decode(value)[2:34]]
    logged = "\n".join(LOGGED).encode()
    assert logged
    for secret in secrets_:
        assert secret not in logged, secret[:12]
    for root in (system.system_dir, system.client_dir):
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            for secret in secrets_:
                assert secret not in data, (path, secret[:12])
