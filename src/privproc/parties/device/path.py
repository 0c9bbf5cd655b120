"""The private path from the device's side (DESIGN.md §2), written once as steps (net/steps.py)
that the blocking client (`private.py`) and the asyncio client (`aio.py`) run with their driver.

One use: the user's controls -> what the witnessed log vouches for (logged.py: the checkpoint,
the CDN's OHTTP key configurations, the issuer's keys) -> a token (payment.py: from the wallet,
fetched ahead under a logged key) -> the session (connection.py, sans-IO: `POST /v1/sessions`
through the relay with the token and the ClientHello, the handshake record by record, the
evidence appraised before anything else is sent, HTTP/1.1 inside TLS) -> the answer -> the use
noted in the report (controls.py): the model it names, the release that served it, the relay,
the gateway's key id, the token key's epoch and whether the session was new; never what was
asked or answered.

Rules: this module decides, the drivers do the I/O: nothing here opens a socket, sleeps or
starts a thread (a background refill is handed to the shell's `schedule`). Nothing of a request
or its answer is written anywhere. Every failure is a typed error that says what failed; what
is retryable is tried again within `retry_budget` seconds (`_retrying`). A session left with a
request half-answered is closed, never reused.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from privproc.attest.appraisal import AttestationRejectedError, ratls_verifier
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.verify import VerificationReport
from privproc.errors import (
    PrivprocError,
    StreamTruncatedError,
    TransportError,
)
from privproc.net.steps import Emit, Sleep, Step
from privproc.parties.device.answers import (
    UseFacts,
    model_card_of,
    relay_label,
    task_answer,
)
from privproc.parties.device.config import ClientConfig
from privproc.parties.device.connection import (
    NEED_DATA,
    AnswerComplete,
    AnswerData,
    AnswerHead,
    ConnectionState,
    EnclaveLostError,
    NeedToken,
    PrivateConnection,
    Send,
    SessionEnded,
    SessionOpened,
    SessionVerified,
)
from privproc.parties.device.controls import ReportEntry, Settings, UsageReport, report_text
from privproc.parties.device.logged import LoggedKeys, TokenKeyRef
from privproc.parties.device.ohttp import (
    ChunkedAnswer,
    chunked_step,
    send_step,
)
from privproc.parties.device.payment import Payment
from privproc.parties.device.results import (
    ChatReply,
    ModelCard,
    Provenance,
    Rewrite,
    Summary,
    Usage,
)
from privproc.parties.device.wallet import Schedule, TokenSupply, Wallet
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.entries import EnclaveRelease, decode_entry
from privproc.tlog.note import parse_note
from privproc.wire import load_json

__all__ = ["RETRY_BUDGET", "RETRY_FIRST", "RETRY_MAX", "PathClient", "PrivatePath"]

T = TypeVar("T")

# Retrying what is retryable: the first wait, the longest, and the whole budget of one call.
RETRY_FIRST = 0.25
RETRY_MAX = 4.0
RETRY_BUDGET = 20.0


class PrivatePath:
    """The module's rules. One request at a time (the shells serialise their callers)."""

    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        schedule: Schedule,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self._policy = config.attestation_policy()
        log_policy = self._policy.log
        assert log_policy is not None  # a client configuration always names its log
        self.step = on_step or (lambda _message: None)
        say = lambda message: self.step(message)  # noqa: E731 (follows a reassigned `step`)
        self.logged = LoggedKeys(config, log_policy, state_dir, say)
        self.payment = Payment(config, state_dir, self.logged, schedule, say)
        self.connection = PrivateConnection(ratls_verifier(self._policy))
        self.last_attestation: VerificationReport | None = None
        self.settings = Settings.load(state_dir)
        self.report = UsageReport(state_dir)
        self._last_bundle: EvidenceBundle | None = None  # the current session's evidence
        self._paid: TokenKeyRef | None = None  # the key of the token the session was opened with
        self._token: str | None = None  # the token of the session being opened
        self.facts = UseFacts()  # the current use's, for its report entry
        self.retry_budget = RETRY_BUDGET  # seconds one call may spend waiting to be tried again
        self.stream: ChunkedAnswer | None = None  # the streamed answer being read
        self._orphan: bytes | None = None  # the DELETE of a session forgotten mid-run

    def give_back(self) -> None:
        """Return the token the gateway did not spend to the wallet (the client is closing)."""
        self.payment.give_back()

    def fill_wallet(self) -> Step[int]:
        """`Payment.fill_wallet`: ahead of use, long before a feature's first request."""
        return self.payment.fill_wallet()

    # --- The session: the connection's events served ------------------------------------------

    def _serve(self, event: object) -> Step[None]:
        """Do what a connection event asks (not a streamed send: `_open_stream` does that)."""
        connection = self.connection
        if isinstance(event, NeedToken):
            self._last_bundle, self._paid = None, None  # a new session: nothing known of it yet
            yield from self.logged.key_config()  # checked against the log before a token
            self._token = yield from self.payment.session_token()
            connection.use_token(self._token)
        elif isinstance(event, Send):
            config = yield from self.logged.key_config()
            answer = yield from send_step(self.config.relay_url, config, event.inner)
            try:
                connection.receive_answer(answer)
            finally:
                self._keep_unspent()
        elif isinstance(event, SessionOpened):
            token, self._token = self._token, None
            self._paid = (yield from self.logged.token_key_of(token)) if token else None
            self.facts.fresh = True
        elif isinstance(event, SessionVerified):
            with contextlib.suppress(PrivprocError):  # kept for the report, if it decodes
                self._last_bundle = EvidenceBundle.decode(event.evidence)
            report = event.attestation
            assert isinstance(report, VerificationReport)
            self.last_attestation = report
            for check in report.checks:
                self.step(f"[{check.status.value}] {check.id}: {check.reason}")
            self.step("attested TLS session verified; sending the request")
        elif isinstance(event, SessionEnded):
            self.step(f"the session ended: {event.reason}; the next request opens a new one")

    def _keep_unspent(self) -> None:
        token = self.connection.take_unspent_token()
        if token is not None:
            self.payment.keep_unspent(token)  # the gateway spends only what it opens

    def _begin(self, method: str, path: str, doc: object | None, streamed: bool) -> None:
        if self.connection.state not in (ConnectionState.IDLE, ConnectionState.READY):
            self.close_now()  # never reuse a session left mid-exchange
        if self.connection.session_id is not None and self.facts.fresh is None:
            self.facts.fresh = False  # this use goes on a session an earlier one opened
        body = b"" if doc is None else json.dumps(doc).encode()
        self.connection.send_request(
            method, path, body, streamed=streamed, content_type="application/json"
        )

    def request(self, method: str, path: str, doc: object | None = None) -> Step[tuple[int, Any]]:
        """One API request to the enclave over the private path; (status, JSON answer)."""
        self._begin(method, path, doc, streamed=False)
        status, body = 0, bytearray()
        try:
            while True:
                event = self.connection.next_event()
                if event is NEED_DATA:
                    raise TransportError("the private connection has nothing to do")
                if isinstance(event, AnswerComplete):
                    answer = _json(bytes(body))
                    self.facts.saw(answer)  # the model it names, for the report
                    return status, answer
                if isinstance(event, AnswerHead):
                    status = event.status
                elif isinstance(event, AnswerData):
                    body += event.data
                elif isinstance(event, Send) and event.streamed:
                    raise TransportError("a plain request was answered as a stream")
                else:
                    yield from self._serve(event)
        except PrivprocError:
            yield from self.close_session()  # a request left without its answer ends the session
            raise
        except GeneratorExit:
            self.close_now()
            raise

    def open_stream(self, method: str, path: str, doc: object | None) -> Step[AnswerHead]:
        """Send one API request whose answer is read as it is produced (`stream_pieces`); the
        answer's head, once it has come."""
        self._begin(method, path, doc, streamed=True)
        try:
            while True:
                event = self.connection.next_event()
                if event is NEED_DATA:
                    if self.stream is None:
                        raise TransportError("the private connection has nothing to do")
                    yield from self._read_stream()
                elif isinstance(event, AnswerHead):
                    return event
                elif isinstance(event, Send) and event.streamed:
                    config = yield from self.logged.key_config()
                    url = self.config.relay_url
                    self.stream = yield from chunked_step(url, config, event.inner)
                else:
                    yield from self._serve(event)
        except PrivprocError:
            yield from self.close_session()
            raise
        except GeneratorExit:
            self.close_now()
            raise

    def _read_stream(self) -> Step[None]:
        """Feed the connection what the next read of the stream brings."""
        stream, connection = self.stream, self.connection
        assert stream is not None
        try:
            pieces = yield from stream.read_step()
        except StreamTruncatedError:
            self.stream = None
            if not connection.stream_broken():
                raise  # the answer is cut
            return  # the answer was whole; only the stream's own end was lost
        for piece in pieces:
            connection.receive_data(piece)
        if stream.ended:
            self.stream = None
            connection.end_of_stream()

    def stream_pieces(self) -> Step[None]:
        """Emit the streamed answer's body as it comes; the step ends at its authenticated end
        (and the stream's own), or raises `StreamTruncatedError`."""
        try:
            while True:
                event = self.connection.next_event()
                if event is NEED_DATA:
                    if self.stream is None:
                        return  # the answer is whole and its stream has ended
                    yield from self._read_stream()
                elif isinstance(event, AnswerData):
                    self.facts.saw_piece(event.data)
                    yield Emit(event.data)
                elif isinstance(event, AnswerComplete):
                    continue  # the stream's own end follows; the session may carry more
                else:
                    yield from self._serve(event)
        except PrivprocError:
            yield from self.close_session()
            raise
        except GeneratorExit:  # the caller stopped reading: the session cannot carry more
            self.close_now()
            raise

    def close_now(self) -> None:
        """Forget the session at once (no I/O: a run being closed cannot do any); its DELETE
        is sent by the next `close_session` or request."""
        self.stream = None
        orphan = self.connection.close_session()
        if orphan is not None:
            self._orphan = orphan

    def close_session(self) -> Step[None]:
        """End the current session (the next request opens a new one), best effort."""
        self.close_now()
        yield from self.flush()

    def flush(self) -> Step[None]:
        """Send the DELETE of a session forgotten mid-run, if there is one (best effort)."""
        orphan, self._orphan = self._orphan, None
        config = self.logged.key_config_now
        if orphan is not None and config is not None:
            with contextlib.suppress(PrivprocError):
                yield from send_step(self.config.relay_url, config, orphan)

    # --- Uses: each checked against the user's controls first, each noted in the report ------

    def use(
        self, feature: str, chat_id: str | None, call: Callable[[], Step[T]], note_ok: bool = True
    ) -> Step[T]:
        self.settings.require(feature, chat_id)  # before anything leaves the device
        facts = self.facts = UseFacts()
        try:
            result = yield from self._retrying(call)
        except AttestationRejectedError as exc:
            ids = ",".join(c.id for c in exc.report.failures)
            self.note(feature, f"attestation refused: {ids}", exc.report, facts)
            raise
        except PrivprocError as exc:
            self.note(feature, f"failed: {type(exc).__name__}", None, facts)
            raise
        if note_ok:
            self.note(feature, "ok", self.last_attestation, facts)
        return result

    def _retrying(self, call: Callable[[], Step[T]]) -> Step[T]:
        """`call()`, tried again while it fails with a retryable error (a party restarting or busy,
        a lost enclave, a cut stream), within `retry_budget` seconds: after the party's
        Retry-After when it gave one, else after a jittered, doubling backoff; a lost enclave is
        retried at once the first time (the new session goes to a healthy enclave). Safe: these
        requests change nothing, and a failed one carried no answer."""
        deadline = time.monotonic() + self.retry_budget
        backoff, attempt = RETRY_FIRST, 1
        while True:
            try:
                return (yield from call())
            except PrivprocError as exc:
                if not exc.retryable:
                    raise
                if isinstance(exc, EnclaveLostError) and attempt == 1:
                    wait = 0.0
                elif exc.retry_after is not None:
                    wait = exc.retry_after
                else:
                    wait = backoff * (0.5 + secrets.randbelow(1001) / 1000)  # x0.5 to x1.5
                    backoff = min(2 * backoff, RETRY_MAX)
                if time.monotonic() + wait > deadline:
                    raise
                self.step(f"{exc} ({type(exc).__name__}): trying again in {wait:.1f} s")
                yield Sleep(wait)
                attempt += 1

    def call_stream(
        self, method: str, path: str, doc: object | None, feature: str, chat_id: str | None
    ) -> Step[None]:
        """A streamed request as a use of `feature`: checked against the controls before anything
        is sent, tried again like every use if it fails in a retryable way before the answer
        starts, and noted in the report when the answer has ended, failed, or was stopped by the
        caller ("stopped"). Emits the answer's head, then its pieces."""
        head = yield from self.use(
            feature, chat_id, lambda: self.open_stream(method, path, doc), note_ok=False
        )
        facts, attestation = self.facts, self.last_attestation
        facts.watch_stream(head.content_type)
        yield Emit(head)
        try:
            yield from self.stream_pieces()
        except PrivprocError as exc:
            self.note(feature, f"failed: {type(exc).__name__}", None, facts)
            raise
        except GeneratorExit:  # the caller stopped reading: still a use, and said so
            self.note(feature, "stopped", attestation, facts)
            raise
        self.note(feature, "ok", attestation, facts)

    def task(self, path: str, doc: object, what: str) -> Step[dict[str, Any]]:
        status, answer = yield from self.request("POST", path, doc)
        return task_answer(status, answer, what)

    def _card(self, answer: dict[str, Any]) -> ModelCard | None:
        """The card of the model that gave `answer` (shown as a step: `--verbose` names it)."""
        card = model_card_of(answer)
        self.step(f"model: {card.label()}" if card else "model: the enclave named none")
        return card

    def summarize(self, chat: list[dict[str, str]], chat_id: str | None) -> Step[Summary]:
        def call() -> Step[Summary]:
            doc = yield from self.task("/v1/tasks/summarize", {"chat": chat}, "summarise")
            where = self.provenance(self.last_attestation)
            return Summary(str(doc["summary"]), where, self._card(doc))

        return self.use("summaries", chat_id, call)

    def rewrite(self, text: str, style: str, chat_id: str | None) -> Step[Rewrite]:
        def call() -> Step[Rewrite]:
            doc = yield from self.task(
                "/v1/tasks/rewrite", {"text": text, "style": style}, "rewrite"
            )
            where = self.provenance(self.last_attestation)
            return Rewrite(str(doc["text"]), style, where, self._card(doc))

        return self.use("writing-help", chat_id, call)

    def chat(self, body: dict[str, Any], chat_id: str | None) -> Step[ChatReply]:
        def call() -> Step[ChatReply]:
            doc = yield from self.task("/v1/chat/completions", body, "answer")
            choice, usage = doc["choices"][0], doc.get("usage") or {}
            return ChatReply(
                str(choice["message"]["content"]),
                str(doc.get("model", "")),
                str(choice.get("finish_reason") or "stop"),
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                self.provenance(self.last_attestation),
                self._card(doc),
            )

        return self.use("chat", chat_id, call)

    def provenance(self, attestation: VerificationReport | None) -> Provenance:
        """The enclave measurement and log position behind the last session's evidence."""
        bundle = self._last_bundle
        measurement = ""
        if attestation is not None and attestation.report is not None:
            measurement = attestation.report.measurement.hex()
        size = None
        if bundle is not None and bundle.checkpoint:
            with contextlib.suppress(PrivprocError):
                size = Checkpoint.parse(parse_note(bundle.checkpoint).text).size
        index = bundle.log_index if bundle is not None and bundle.release_entry else None
        return Provenance(measurement, index, size)

    def _release(self) -> EnclaveRelease | None:
        """The logged release in the current session's evidence (proven before anything was
        sent), if there is one."""
        bundle = self._last_bundle
        if bundle is None or not bundle.release_entry:
            return None
        with contextlib.suppress(PrivprocError):
            entry = decode_entry(bundle.release_entry)
            return entry if isinstance(entry, EnclaveRelease) else None
        return None

    def note(
        self,
        feature: str,
        outcome: str,
        attestation: VerificationReport | None,
        facts: UseFacts,
    ) -> None:
        """Add this use to the report: what served it, never what it carried."""
        where = self.provenance(attestation)
        release = self._release()
        paid, key_config = self._paid, self.logged.key_config_now
        entry = ReportEntry(
            UsageReport.now(),
            feature,
            report_text(outcome),
            where.measurement,
            where.log_index,
            where.checkpoint_size,
            source_revision=release.source_revision if release is not None else "",
            model=facts.model,
            model_digest=facts.model_digest,
            relay=relay_label(self.config.relay_url),
            gateway_key_id=key_config.key_id if key_config is not None else None,
            token_key_epoch=paid.not_before if paid is not None else None,
            token_key_log_index=paid.log_index if paid is not None else None,
            fresh_session=facts.fresh,
        )
        self.report.add(entry)


def _json(data: bytes) -> Any:
    return load_json(data, "the enclave's answer") if data else None


class PathClient:
    """What the blocking and the asyncio client both show of their `PrivatePath`."""

    path: PrivatePath

    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: Any = None,
    ) -> None:
        raise NotImplementedError  # each client makes its path with its own driver

    @classmethod
    def from_state(
        cls,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: Any = None,
    ) -> Self:
        """The client of the device whose state is `state_dir` (its `client.json`)."""
        config = ClientConfig.load(state_dir / "client.json")
        return cls(config, state_dir, on_step=on_step, http=http)

    @property
    def config(self) -> ClientConfig:
        return self.path.config

    @config.setter
    def config(self, config: ClientConfig) -> None:
        """Point the client elsewhere (its trust anchors stay those it was made with)."""
        self.path.config = self.path.logged.config = self.path.payment.config = config

    @property
    def state_dir(self) -> Path:
        return self.path.state_dir

    @property
    def wallet(self) -> Wallet:
        return self.path.payment.wallet

    @property
    def tokens(self) -> TokenSupply:
        return self.path.payment.tokens

    @property
    def settings(self) -> Settings:
        return self.path.settings

    @property
    def report(self) -> UsageReport:
        return self.path.report

    @property
    def last_attestation(self) -> VerificationReport | None:
        return self.path.last_attestation

    @property
    def retry_budget(self) -> float:
        """Seconds one call may spend waiting to be tried again."""
        return self.path.retry_budget

    @retry_budget.setter
    def retry_budget(self, seconds: float) -> None:
        self.path.retry_budget = seconds
