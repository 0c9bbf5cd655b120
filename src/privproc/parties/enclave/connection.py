"""One client's connection inside the enclave: attested TLS, then HTTP/1.1 (h11) inside it.

    records in -> ServerSession (TLS, evidence) -> plaintext -> h11 -> requests
    responses -> h11 -> ServerSession -> records out

Sans-IO: `receive(records)` returns the complete requests that arrived (none before the
evidence: once the handshake is done, `tls.pending_event` asks for evidence over the session's
report_data, which the caller gets from the platform and hands to `tls`), `respond(status, body)`
queues an answer (or `start_stream`, `stream_data`..., `end_stream` one delivered as it is
produced, in HTTP/1.1 chunked transfer coding, whose last chunk is the answer's authenticated end:
it travels inside TLS, so nobody on the way can fake it or cut the answer unnoticed),
`send_pending()` hands out the records to send. The caller (the
enclave service) runs the API handler, off its event loop, between the two.

Rules: one request at a time per connection (HTTP/1.1 without pipelining); bodies are bounded;
a protocol error closes the connection; nothing of a request outlives its response. It counts
the application bytes and the requests it has received (numbers only), so that the service can
tell a session's use from records that only keep it alive; when the service says an answer is
the session's last (`last_answer`), it carries `connection: close`, so the client opens its next
session without first trying this one again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

from privproc.errors import DecodeError, PrivprocError, TooLargeError
from privproc.limits import MAX_BODY
from privproc.ratls.session import ServerSession, ServerState, server_session
from privproc.ratls.tls import ServerIdentity

__all__ = ["EnclaveConnection", "HttpRequest"]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes = field(repr=False)


class EnclaveConnection:
    def __init__(self, identity: ServerIdentity) -> None:
        self.tls: ServerSession = server_session(identity)
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        self._current: tuple[str, str] | None = None
        self._body = bytearray()
        self.application_bytes = 0
        self.requests_received = 0
        self.last_answer = False  # set by the service: the next answer ends the connection

    def receive(self, records: bytes) -> list[HttpRequest]:
        """Feed TLS records from the client; returns every request now complete."""
        self.tls.receive(records)
        plaintext = self.tls.read() if self.tls.state is ServerState.OPEN else b""
        if plaintext:
            self.application_bytes += len(plaintext)
            self._http.receive_data(plaintext)
        requests = []
        while True:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError:
                raise DecodeError("the client's HTTP is malformed") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                self._current = (event.method.decode("ascii"), event.target.decode("ascii"))
                self._body.clear()
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY:
                    raise TooLargeError("the request body is too large")
            elif isinstance(event, h11.EndOfMessage) and self._current is not None:
                method, path = self._current
                requests.append(HttpRequest(method, path, bytes(self._body)))
                self.requests_received += 1
                self._current = None
                self._body.clear()
            elif isinstance(event, h11.ConnectionClosed):
                break
        return requests

    def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Answer the request being served, and get ready for the next one."""
        headers = [("content-length", str(len(body)))]
        self._send(
            self._head(status, content_type, headers), h11.Data(data=body), h11.EndOfMessage()
        )

    def start_stream(self, status: int, content_type: str) -> None:
        """Begin an answer whose length is not known yet (chunked transfer coding)."""
        self._send(self._head(status, content_type, []))

    def stream_data(self, data: bytes) -> None:
        if data:
            self._send(h11.Data(data=data))

    def end_stream(self) -> None:
        """The answer's last chunk: without it the client reports the answer as cut short."""
        self._send(h11.EndOfMessage())

    @property
    def finished(self) -> bool:
        """An answer said `connection: close` and is complete: nothing more will be served."""
        return self._http.our_state is h11.MUST_CLOSE

    def _head(self, status: int, content_type: str, headers: list[tuple[str, str]]) -> h11.Response:
        headers = [("content-type", content_type), *headers, ("cache-control", "no-store")]
        if self.last_answer:
            headers.append(("connection", "close"))
        return h11.Response(status_code=status, headers=headers)

    def _send(self, *events: h11.Response | h11.Data | h11.EndOfMessage) -> None:
        data = bytearray()
        try:
            for event in events:
                data += self._http.send(event) or b""
        except h11.LocalProtocolError as exc:
            raise PrivprocError(f"cannot answer now: {exc}") from None
        self.tls.write(bytes(data))
        if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
            self._http.start_next_cycle()

    def send_pending(self) -> bytes:
        return self.tls.send_pending()

    def close(self) -> None:
        self.tls.close()
