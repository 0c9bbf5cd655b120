"""The operator's side, for tests that play it: the genuine enclave build run in this process,
reached by the real gateway through a link on the enclave's port that the operator controls
(and so can read, alter, reorder, replay, drop, hold back or cut what passes).

Everything here is a real part of privproc (the enclave app, its evidence, the real gateway in
front); only the link is the attacker's, written here to do what an attacker would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc.net.http import StreamAborted, StreamedBody
from privproc.parties.enclave.platform.provider import EvidenceProvider, ReleaseProof
from privproc.parties.enclave.platform.virtual import VirtualSnp
from privproc.system import System
from tests.servers import app_in_thread

# (method, path, records) -> the records to pass on; None drops the exchange (answered empty).
Tamper = Callable[[str, str, bytes], bytes | None]


def records(data: bytes) -> list[bytes]:
    """TLS records, each with its 5-byte header (type, version, length)."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        end = pos + 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append(data[pos:end])
        pos = end
    return out


def flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


@dataclasses.dataclass
class Gate:
    open: threading.Event = dataclasses.field(default_factory=threading.Event)
    passed: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class Link:
    """What the link does. `to_enclave` / `to_gateway` see (and may change or drop) the records
    of every exchange; a streamed answer is passed on for `after` pieces, then "end" ends it
    cleanly, "drop" drops the connection, "wait" holds the rest until `gate.open` is set (a
    minute at most) and then sets `gate.passed`. `seen` keeps every exchange that passed."""

    to_enclave: Tamper = lambda method, path, data: data
    to_gateway: Tamper = lambda method, path, data: data
    after: int | None = None
    then: str = "end"
    gate: Gate = dataclasses.field(default_factory=Gate)
    seen: list[tuple[str, str, bytes, bytes]] = dataclasses.field(default_factory=list)

    def app(self, enclave_url: str) -> Starlette:
        http = httpx.AsyncClient(timeout=60)

        async def forward(request: Request) -> Response:
            body = await request.body()
            method, path = request.method, request.url.path
            url = enclave_url + path
            if path.endswith("/stream") and self.after is not None:
                return StreamedBody(self._pieces(http, url, body), "application/octet-stream", {})
            sent = self.to_enclave(method, path, body) if path.startswith("/sessions/") else body
            if sent is None:
                return Response(b"", media_type="application/octet-stream")
            answer = await http.request(method, url, content=sent)
            back = answer.content
            if path.startswith("/sessions/") and answer.status_code == 200:
                self.seen.append((method, path, sent, back))
                back = self.to_gateway(method, path, back) or b""
            kind = answer.headers.get("content-type", "application/octet-stream")
            return Response(back, answer.status_code, media_type=kind)

        methods = ["GET", "PUT", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])

    async def _pieces(self, http: httpx.AsyncClient, url: str, body: bytes) -> AsyncIterator[bytes]:
        async with http.stream("POST", url, content=body) as answer:
            count = 0
            async for piece in answer.aiter_raw():
                if count == self.after:
                    if self.then == "drop":
                        raise StreamAborted
                    if self.then == "end":
                        return
                    await asyncio.to_thread(self.gate.open.wait, 60)
                    self.gate.passed.set()
                count += 1
                yield piece


def genuine_provider(system: System, platform: VirtualSnp | None = None) -> EvidenceProvider:
    """The logged release's evidence, from the system's virtual platform (or `platform`)."""
    from privproc.parties.enclave.inference.backends import MODEL_NAME, locate_smollm2
    from privproc.parties.enclave.workload import enclave_config, enclave_manifest

    sysdir = system.system_dir
    return EvidenceProvider(
        platform or VirtualSnp.load(sysdir / "platform"),
        enclave_manifest(locate_smollm2(), enclave_config(MODEL_NAME, system.sessions)),
        ReleaseProof.from_json((sysdir / "release-proof.json").read_text()),
    )


@contextmanager
def enclave_behind(
    system: System, link: Link, provider: Callable[[bytes], bytes] | None = None
) -> Iterator[str]:
    """The enclave (genuine unless `provider` says otherwise) in this process, behind `link` on
    the enclave's port; the system's own enclave is stopped meanwhile and restarted after.
    Yields the enclave's own URL (behind the link)."""
    from privproc.parties.enclave.inference.backends import EmbeddedBackend
    from privproc.parties.enclave.service import create_enclave_app
    from privproc.ratls.tls import ServerIdentity

    port = int(system.enclave_args[system.enclave_args.index("--port") + 1])
    system.stop_party("enclave")
    app = create_enclave_app(
        EmbeddedBackend(), ServerIdentity.generate(), provider or genuine_provider(system)
    )
    try:
        with app_in_thread(app) as inner, app_in_thread(link.app(inner), system.host, port):
            yield inner
    finally:
        system.start_enclave()
