"""The private path, from the device's side: DESIGN.md §2 in one client.

    client = PrivateProcessingClient.from_file(state / "client.json")
    summary = client.summarize(chat)                    # or rewrite(text, style), chat(prompt)
    with client.incognito_chat() as conversation:       # multi-turn, held in memory only
        reply = conversation.send("hi")                 # (parties/device/incognito.py)

One request: key configurations from the CDN -> a Privacy Pass token from the wallet (filled
ahead of use, refilled in the background at a random time when low: parties/device/wallet.py's
`TokenSupply`) -> `POST /v1/sessions` through the relay (OHTTP) with the token and the
TLS ClientHello -> the TLS handshake record by record -> the enclave's evidence, appraised before
anything else is sent (hardware chain, this session's binding, policy, the release in the
witnessed log) -> HTTP/1.1 inside TLS -> the answer. A session is reused while it lives; a lost
enclave gives a clear `EnclaveLostError` and the next request opens a new session.

Streamed answers (`stream_request`, `chat_stream`) travel as chunked OHTTP: the gateway forwards
the enclave's TLS records as they come, and the client hands out each piece of the answer as soon
as TLS has authenticated it. The answer is whole only when its last HTTP chunk, inside TLS,
arrives; a stream that ends before (cut by the relay, the gateway or the network) raises
`StreamTruncatedError`, never a short answer.

Every use (a task, a chat, a `call`) is checked against the user's controls first and noted in
the Private Processing report (parties/device/controls.py): the model the enclave named, the
release that
served it, the relay, the gateway's key id, the epoch of the token key that paid for the session
and whether the session was new; never what was asked or answered. Every answer names the model
that gave it: results carry the enclave's `ModelCard` (a stream's `model_card` once it starts),
and each is a step (`on_step`, what `--verbose` prints).

Rules: nothing of a request or its answer is written anywhere; only the wallet, the account
secret, the user's controls and the report live in the state directory; every failure is a typed
error that says what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Unpack

import h11
import httpx

from privproc.attest.amd import TrustAnchors, TrustedChain
from privproc.attest.appraisal import AttestationPolicy, AttestationRejectedError, ratls_verifier
from privproc.attest.bulletins import raised_minimum_tcb
from privproc.attest.evidence import EvidenceBundle
from privproc.attest.snp import Product, SigningKey, TcbParts
from privproc.attest.verify import VerificationReport
from privproc.errors import (
    CryptoError,
    DecodeError,
    PeerRejectedError,
    PrivprocError,
    StreamTruncatedError,
    TransportError,
    UnusableAnswerError,
    UsageError,
    parse_retry_after,
)
from privproc.net.client import new_client
from privproc.net.ratls import check_evidence
from privproc.ohttp import bhttp, bhttp_stream
from privproc.ohttp.keys import KeyConfig, decode_key_configs
from privproc.parties.device.controls import ReportEntry, Settings, UsageReport, report_text
from privproc.parties.device.incognito import AsyncIncognitoChat, ChatOptions, IncognitoChat
from privproc.parties.device.issuer import IssuerClient
from privproc.parties.device.logfetch import AcceptedCheckpoint, LogReader, http_fetcher
from privproc.parties.device.ohttp import OhttpClient, choose_config
from privproc.parties.device.results import (
    ChatReply,
    ModelCard,
    Provenance,
    Rewrite,
    Summary,
    Usage,
)
from privproc.parties.device.sse import data_events
from privproc.parties.device.wallet import RefillPolicy, TokenSupply, Wallet
from privproc.ratls.session import ClientSession, ClientState, client_session
from privproc.tlog.checkpoint import Checkpoint
from privproc.tlog.client import LogPolicy
from privproc.tlog.entries import EnclaveRelease, IssuerTokenKey, OhttpKeyConfigSet, decode_entry
from privproc.tlog.note import parse_note
from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, Token, TokenChallenge, parse_authorization
from privproc.tokens.directory import IssuerDirectory, KeySet
from privproc.tokens.issuance import token_key_id
from privproc.wire import load_json

__all__ = [
    "AsyncPrivateProcessingClient",
    "ClientConfig",
    "EnclaveLostError",
    "NotLoggedError",
    "PrivateProcessingClient",
    "StreamedAnswer",
    "TargetedKeyError",
]

T = TypeVar("T")

GATEWAY_AUTHORITY = "https://gateway.invalid"
MAX_ROUNDS = 8
CHALLENGE_TTL = 600.0  # seconds before the issuer's name and keys are looked up again
# Retrying what is retryable: the first wait, the longest, and the whole budget of one call.
RETRY_FIRST = 0.25
RETRY_MAX = 4.0
RETRY_BUDGET = 20.0
# An issuer has at most three keys live at once: the previous epoch's (still verifying), the
# current one and the next (announced with not-before). More could be keys per user.
MAX_LIVE_ISSUER_KEYS = 3
# How far into a streamed answer its first event (which names the model) is looked for.
MODEL_SNIFF_LIMIT = 64 * 1024


class NotLoggedError(CryptoError):
    """A key the client was handed is not in the transparency log: it could be for it alone."""


class TargetedKeyError(CryptoError):
    """The log shows the issuer with more live keys than rotation needs: it could be giving
    users keys of their own, to recognise their tokens."""


class EnclaveLostError(TransportError):
    """The enclave holding the session is gone; a new request will open a new session."""

    retryable = True


@dataclass(frozen=True)
class ClientConfig:
    relay_url: str
    keys_url: str
    log_url: str
    issuer_url: str
    gateway_origin: str
    log_origin: str
    log_keys: tuple[str, ...]
    witness_keys: tuple[str, ...]
    witness_quorum: int
    hardware_roots: tuple[str, ...] = ()  # extra ASK+ARK PEM texts (a virtual SNP's)
    allow_amd_roots: bool = True
    # Minimum firmware per product on top of the built-in one (attest/bulletins.py), e.g.
    # {"Milan": {"snp": 29}}: each SPL given raises that product's minimum, none lowers it.
    min_tcb: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        if not path.exists():
            raise NotConfiguredError(
                f"no client configuration at {path}: start the system first (`make up`, or "
                "`privproc up`), or give the --state it uses"
            )
        try:
            doc = load_json(path.read_bytes(), str(path))
            return cls(
                relay_url=doc["relay_url"],
                keys_url=doc["keys_url"],
                log_url=doc["log_url"],
                issuer_url=doc["issuer_url"],
                gateway_origin=doc["gateway_origin"],
                log_origin=doc["log"]["origin"],
                log_keys=tuple(doc["log"]["keys"]),
                witness_keys=tuple(doc["log"]["witnesses"]),
                witness_quorum=int(doc["log"]["quorum"]),
                hardware_roots=tuple(doc.get("hardware_roots", ())),
                allow_amd_roots=bool(doc.get("allow_amd_roots", True)),
                min_tcb=tuple(
                    (str(product), tuple((str(k), int(v)) for k, v in spls.items()))
                    for product, spls in doc.get("policy", {}).get("min_tcb", {}).items()
                ),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, PrivprocError) as exc:
            raise DecodeError(f"{path} is not a privproc client configuration: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(
            {
                "relay_url": self.relay_url,
                "keys_url": self.keys_url,
                "log_url": self.log_url,
                "issuer_url": self.issuer_url,
                "gateway_origin": self.gateway_origin,
                "log": {
                    "origin": self.log_origin,
                    "keys": list(self.log_keys),
                    "witnesses": list(self.witness_keys),
                    "quorum": self.witness_quorum,
                },
                "hardware_roots": list(self.hardware_roots),
                "allow_amd_roots": self.allow_amd_roots,
                "policy": {"min_tcb": {product: dict(spls) for product, spls in self.min_tcb}},
            },
            indent=2,
        )

    def attestation_policy(self) -> AttestationPolicy:
        chains = [
            TrustedChain.from_pem(pem, product, SigningKey.VCEK, "client.json")
            for pem in self.hardware_roots
            for product in Product  # a virtual SNP models any of them
        ]
        roots = TrustAnchors.of(chains)
        if self.allow_amd_roots:
            roots = _merge_amd(roots)
        log = LogPolicy.from_keys(
            self.log_origin, self.log_keys, self.witness_keys, self.witness_quorum
        )
        try:
            min_tcb = {}
            for name, spls in self.min_tcb:
                product, levels = Product.parse(name), dict(spls)
                if set(levels) - _SPLS:
                    raise UsageError(f"the security patch levels are {', '.join(sorted(_SPLS))}")
                min_tcb[product] = TcbParts(
                    product,
                    levels.get("bootloader", 0),
                    levels.get("tee", 0),
                    levels.get("snp", 0),
                    levels.get("microcode", 0),
                    fmc=levels.get("fmc", 0) if product is Product.TURIN else None,
                )
        except PrivprocError as exc:
            raise DecodeError(f"client.json's policy.min_tcb is not valid: {exc}") from None
        return AttestationPolicy(roots=roots, log=log, min_tcb=raised_minimum_tcb(min_tcb))


_SPLS = frozenset({"bootloader", "tee", "snp", "microcode", "fmc"})


class NotConfiguredError(PrivprocError):
    """This device has no client configuration yet (`client.json`): no system was started for
    it, or it was given another state directory."""


def _refused(
    what: str, status: int, content: bytes, retry_after: str | None = None
) -> PeerRejectedError:
    """The gateway's refusal, with its reason, whether to retry and when, when it gave them."""
    reason, retry = "", False
    with contextlib.suppress(PrivprocError, AttributeError, KeyError, TypeError):
        doc = load_json(content, "the gateway's refusal")
        reason, retry = f": {doc['error']}", bool(doc.get("retry"))
    hint = "; try again shortly" if retry else ""
    return PeerRejectedError(
        f"{what} ({status}{reason}){hint}",
        status,
        retryable=retry or None,
        retry_after=parse_retry_after(retry_after),
    )


def _merge_amd(extra: TrustAnchors) -> TrustAnchors:
    """AMD's anchors for every (product, kind) the extra anchors do not claim."""
    claimed = {(c.product, c.kind) for c in extra.chains}
    kept = [c for c in TrustAnchors.amd().chains if (c.product, c.kind) not in claimed]
    return TrustAnchors.of([*kept, *extra.chains])


@dataclass
class StreamedAnswer:
    """An answer arriving piece by piece: `status` and `content_type` are known; iterate for the
    body. Iteration ends at the answer's authenticated end, or raises `StreamTruncatedError`."""

    status: int
    content_type: str
    pieces: Iterator[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return self.pieces

    def close(self) -> None:
        """Stop reading (the rest of the answer is dropped, with its session)."""
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


@dataclass
class _UseFacts:
    """What one use learns for its report entry, as it goes (never content)."""

    # True: it opened a new attested session (a token was spent); False: it reused one; None:
    # it reached no session (it failed before one was opened).
    fresh: bool | None = None
    model: str = ""
    model_digest: str = ""

    def saw(self, answer: object) -> None:
        """Keep the model an answer names, if it names one."""
        name, digest = model_of(answer)
        if name or digest:
            self.model, self.model_digest = name, digest


@dataclass(frozen=True)
class _TokenKeyRef:
    """The logged issuer key of a spent token: when it began signing, and its log entry."""

    not_before: int
    log_index: int


class _Session:
    def __init__(self, session_id: str, tls: ClientSession) -> None:
        self.id = session_id
        self.tls = tls
        self.http = h11.Connection(h11.CLIENT)


class PrivateProcessingClient:
    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.wallet = Wallet(state_dir)
        self.tokens = TokenSupply(
            self.wallet, RefillPolicy(), fetch=self._fetch_tokens, fill=self._fill_tokens
        )
        self._policy = config.attestation_policy()
        self._http = http or new_client(300)
        self._owns_http = http is None
        self._ohttp = OhttpClient(http=self._http)
        # The issuer's directory and key set come from the CDN (which mirrors them beside the
        # log): the issuer sees only the token requests, not every device that looks at its keys.
        self._issuer = IssuerClient(
            config.issuer_url, None, http=self._http, published_at=config.log_url
        )
        self._challenge: tuple[bytes, float] | None = None  # (challenge, when it was learnt)
        # A token the gateway did not spend (it was busy): (challenge, token), used next.
        self._unspent: tuple[bytes, str] | None = None
        log_policy = self._policy.log
        assert log_policy is not None  # a client configuration always names its log
        self._log = LogReader(
            log_policy,
            http_fetcher(config.log_url, self._http),
            AcceptedCheckpoint(state_dir / "log-checkpoint.json"),
        )
        # (checkpoint size, key-config documents, issuer keys, issuer key id -> its log index)
        self._logged: tuple[int, set[bytes], list[IssuerTokenKey], dict[bytes, int]] | None = None
        self._logged_lock = threading.Lock()  # held by _logged_keys
        self._key_config: KeyConfig | None = None
        self._session: _Session | None = None
        self._step = on_step or (lambda _message: None)
        self.last_attestation: VerificationReport | None = None
        self.settings = Settings.load(state_dir)
        self.report = UsageReport(state_dir)
        self._last_bundle: EvidenceBundle | None = None  # the current session's evidence
        self._paid: _TokenKeyRef | None = None  # the key of the token the session was opened with
        self._facts = _UseFacts()  # the current use's, for its report entry
        self.retry_budget = RETRY_BUDGET  # seconds one call may spend waiting to be tried again

    @classmethod
    def from_state(
        cls,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: httpx.Client | None = None,
    ) -> PrivateProcessingClient:
        config = ClientConfig.load(state_dir / "client.json")
        return cls(config, state_dir, on_step=on_step, http=http)

    def close(self) -> None:
        self.tokens.close()
        unspent, self._unspent = self._unspent, None
        if unspent is not None:  # the gateway did not spend it: the wallet keeps it for later
            with contextlib.suppress(PrivprocError, OSError):
                self.wallet.put_back(*unspent, time.time())
        self.close_session()
        if self._owns_http:
            self._http.close()

    # --- The wire: OHTTP through the relay ---------------------------------------------------

    def _logged_keys(self) -> tuple[set[bytes], list[IssuerTokenKey]]:
        with self._logged_lock:  # a background refill checks its key against them too
            return self._read_logged_keys()

    def _read_logged_keys(self) -> tuple[set[bytes], list[IssuerTokenKey]]:
        """(OHTTP key-config documents, issuer token keys) the witnessed log holds.

        The checkpoint must be consistent with the last one this device accepted; every entry
        read is proven against it. (A scan: fine for a log of releases and keys; a large log
        would publish an index.)"""
        current = self._log.update()
        if self._logged is None or self._logged[0] != current.size:
            configs: set[bytes] = set()
            token_keys: list[IssuerTokenKey] = []
            key_at: dict[bytes, int] = {}
            for index in range(current.size):
                entry = decode_entry(self._log.entry(index))
                if isinstance(entry, OhttpKeyConfigSet):
                    configs.add(entry.key_configs)
                elif isinstance(entry, IssuerTokenKey):
                    token_keys.append(entry)
                    key_at.setdefault(token_key_id(entry.token_key), index)
            self._logged = (current.size, configs, token_keys, key_at)
            cosigners = ", ".join(current.cosigners)
            self._step(f"log checkpoint size {current.size}, cosigned by {cosigners}")
        return self._logged[1], self._logged[2]

    def _config(self) -> KeyConfig:
        if self._key_config is None:
            document = self._ohttp.fetch_key_configs_document(self.config.keys_url)
            if document not in self._logged_keys()[0]:
                raise NotLoggedError("the CDN's OHTTP key configurations are not in the log")
            self._key_config = choose_config(decode_key_configs(document))
            self._step(f"OHTTP key config {self._key_config.key_id} from the CDN, in the log")
        return self._key_config

    def _inner(
        self, method: str, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> bhttp.Response:
        request = bhttp.Request.build(
            method, GATEWAY_AUTHORITY + path, headers=headers, content=body
        )
        return self._ohttp.request(self.config.relay_url, self._config(), request)

    # --- Tokens -----------------------------------------------------------------------------

    def _token_challenge(self, now: float) -> bytes:
        if self._challenge is None or now - self._challenge[1] > CHALLENGE_TTL:
            key_set = self._issuer.key_set()
            challenge = TokenChallenge(
                TOKEN_TYPE_BLIND_RSA, key_set.issuer_name, b"", (self.config.gateway_origin,)
            ).encode()
            self._challenge = (challenge, now)
        return self._challenge[0]

    def _token(self) -> str:
        now = time.time()
        challenge = self._token_challenge(now)
        unspent, self._unspent = self._unspent, None
        if unspent is not None and unspent[0] == challenge:
            self._step("the token the gateway did not spend last time")
            return unspent[1]
        token = self.tokens.token(challenge, now)
        self._step("a Privacy Pass token from the wallet (unlinkable to the account)")
        return token

    def fill_wallet(self) -> int:
        """Fill the token wallet ahead of use (to its target, if it is low); how many tokens
        were fetched. Run when a feature is turned on, long before its first request."""
        now = time.time()
        return self.tokens.fill_ahead(self._token_challenge(now), now)

    def _fetch_tokens(self, challenge: bytes, now: float, count: int) -> str:
        """A batch of `count` tokens, in the request's path (the wallet was empty): one to use
        now, the rest kept."""
        return self._issue(
            now, lambda i, k, ks: self.wallet.fetch(i, challenge, k, ks, count=count, now=now)
        )

    def _fill_tokens(self, challenge: bytes, now: float, threshold: int, target: int) -> int:
        """Top the wallet up to `target` tokens if it holds fewer than `threshold` (ahead of
        use, or in the background); how many were fetched."""
        return self._issue(
            now,
            lambda i, k, ks: self.wallet.refill(
                i, challenge, k, ks, threshold=threshold, target=target, now=now
            ),
        )

    def _issue(self, now: float, use: Callable[[IssuerClient, bytes, KeySet], T]) -> T:
        """`use(issuer, key, key_set)`: tokens fetched from the issuer under a logged key.

        The key is the directory's current one, or, for a device whose clock is behind the
        issuer's as the key changes, the logged next one. A key refused as unknown (the issuer's
        epoch turned between the directory and the request) is asked once more, with the key the
        directory names then: a client asking at the moment of a key change never fails."""
        with IssuerClient(
            self.config.issuer_url,
            self._secret(),
            http=self._http,
            published_at=self.config.log_url,
        ) as issuer:
            try:
                return self._with_key(issuer, now, use)
            except PeerRejectedError as exc:
                if exc.status != 422:
                    raise
            self._step("the issuer's token key changed as it was asked; asking again")
            return self._with_key(issuer, time.time(), use)

    def _with_key(
        self, issuer: IssuerClient, now: float, use: Callable[[IssuerClient, bytes, KeySet], T]
    ) -> T:
        key_set = issuer.key_set()
        key = self._token_key(key_set.issuer_name, issuer.directory(), now)
        return use(issuer, key, key_set)

    def _token_key(self, issuer: str, directory: IssuerDirectory, now: float) -> bytes:
        """The key to ask tokens for: the directory's preferred one (RFC 9578 §4: the first whose
        not-before has passed). If the log holds it but says it no longer verifies (a directory
        mirror that lags the issuer), the newest begun key of the directory that the log holds
        live instead; if no key has begun by this device's clock (it lags the issuer's), the
        directory's first key when the log holds it as the next one. `_check_token_key` then
        refuses whatever the log does not vouch for (an unlogged preferred key included)."""
        logged = [e for e in self._logged_keys()[1] if e.issuer == issuer]
        begun = [k for k in directory.keys if k.not_before is None or k.not_before <= now]
        if begun:
            key = begun[0].token_key
            live = {e.token_key for e in logged if e.not_before <= now < e.expires}
            newest = [k for k in begun if k.token_key in live]
            if newest and any(e.token_key == key for e in logged):
                key = max(newest, key=lambda k: k.not_before or 0).token_key
        else:
            key = directory.keys[0].token_key
            upcoming = sorted((e for e in logged if now < e.not_before), key=lambda e: e.not_before)
            if not upcoming or upcoming[0].token_key != key:
                raise NotLoggedError(
                    "the issuer's token key is neither live now nor the logged next one"
                )
            now = upcoming[0].not_before  # checked as of the moment it begins
        self._check_token_key(issuer, key, now)
        return key

    def _check_token_key(self, issuer: str, key: bytes, now: float) -> None:
        """The issuer's key must be logged, live now, and one of the few the issuer has live:
        an issuer that logged a key per user (to recognise their tokens) shows as too many."""
        entries = [e for e in self._logged_keys()[1] if e.issuer == issuer]
        mine = [e for e in entries if e.token_key == key]
        if not mine:
            raise NotLoggedError("the issuer's token key is not in the log")
        if not any(e.not_before <= now < e.expires for e in mine):
            raise NotLoggedError("the issuer's token key is logged, but not for now")
        live = {e.token_key for e in entries if e.not_before <= now < e.expires}
        if len(live) > MAX_LIVE_ISSUER_KEYS:
            raise TargetedKeyError(
                f"the log holds {len(live)} keys of {issuer} live at once (at most "
                f"{MAX_LIVE_ISSUER_KEYS} are needed for rotation): keys that could single users "
                "out; no token is fetched"
            )

    def _token_key_of(self, authorization: str) -> _TokenKeyRef | None:
        """The logged key a token was issued under, or None if it cannot be told. Looked up in
        the log this client has read (read again only for a key it has not seen: a token another
        client sharing the wallet fetched under a newer key). Only the key's public facts are
        kept, never the token."""
        try:
            key_id = Token.decode(parse_authorization(authorization)).token_key_id
        except PrivprocError:
            return None
        if self._logged is None or key_id not in self._logged[3]:
            with contextlib.suppress(PrivprocError, httpx.HTTPError):
                self._logged_keys()
        logged = self._logged
        if logged is None or key_id not in logged[3]:
            return None
        entry = next(e for e in logged[2] if token_key_id(e.token_key) == key_id)
        return _TokenKeyRef(entry.not_before, logged[3][key_id])

    def _secret(self) -> str:
        path = self.state_dir / "account.secret"
        try:
            return path.read_text().strip()
        except OSError:
            raise PrivprocError(f"no account secret at {path}") from None

    # --- Sessions ---------------------------------------------------------------------------

    def _exchange(self, session: _Session) -> None:
        """Send what TLS has queued and feed back the answer (one OHTTP round trip)."""
        out = session.tls.send_pending()
        answer = self._inner("POST", f"/v1/sessions/{session.id}", out, [])
        if answer.status in (404, 502):
            self._session = None
            raise EnclaveLostError("the enclave holding this session is gone; retry")
        if answer.status != 200:
            self._session = None
            raise PeerRejectedError(f"the gateway answered {answer.status}", answer.status)
        session.tls.receive(answer.content)

    def _open(self) -> _Session:
        self._last_bundle, self._paid = None, None  # a new session: nothing known of it yet
        self._config()  # the keys are checked against the log before a token is spent
        appraise = ratls_verifier(self._policy)

        def verifier(evidence: bytes, report_data: bytes) -> VerificationReport:
            with contextlib.suppress(PrivprocError):  # kept for the report, if it decodes
                self._last_bundle = EvidenceBundle.decode(evidence)
            return appraise(evidence, report_data)

        tls = client_session()
        hello = tls.send_pending()
        token = self._token()
        answer = self._inner("POST", "/v1/sessions", hello, [("authorization", token)])
        if answer.status != 201:
            if answer.status != 401 and self._challenge is not None:
                # The gateway spends a token only for a session it opens: keep this one.
                self._unspent = (self._challenge[0], token)
            raise _refused(
                "the gateway refused a new session",
                answer.status,
                answer.content,
                answer.header("retry-after"),
            )
        session = _Session(answer.header("session-id") or "", tls)
        self._paid = self._token_key_of(token)  # the gateway spent it: this session is new
        self._facts.fresh = True
        tls.receive(answer.content)
        for _ in range(MAX_ROUNDS):
            if tls.state is ClientState.VERIFIED:
                break
            self._exchange(session)
            check_evidence(tls, verifier)  # the evidence, once received: VERIFIED or it raises
        if tls.state is not ClientState.VERIFIED:
            raise PrivprocError("the enclave did not complete the attested handshake")
        report = tls.attestation
        assert isinstance(report, VerificationReport)
        self.last_attestation = report
        for check in report.checks:
            self._step(f"[{check.status.value}] {check.id}: {check.reason}")
        self._step("attested TLS session verified; sending the request")
        return session

    def close_session(self) -> None:
        """End the current session (the next request opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(PrivprocError):
                self._inner("DELETE", f"/v1/sessions/{session.id}", b"", [])

    def _send_http(self, method: str, path: str, doc: object | None) -> _Session:
        """Queue one HTTP request inside the session's TLS (opening a session if needed)."""
        if self._session is not None and self._session.http.our_state is not h11.IDLE:
            self._drop(self._session)  # never reuse a session left mid-exchange
        if self._session is not None and self._facts.fresh is None:
            self._facts.fresh = False  # this use goes on a session an earlier one opened
        session = self._session or self._open()
        self._session = session
        body = b"" if doc is None else json.dumps(doc).encode()
        headers = [("host", "enclave"), ("content-type", "application/json"),
                   ("content-length", str(len(body)))]  # fmt: skip
        try:
            data = session.http.send(h11.Request(method=method, target=path, headers=headers))
        except h11.LocalProtocolError as exc:  # a path no HTTP request can carry
            raise UsageError(f"the request cannot be sent: {exc}") from None
        data += session.http.send(h11.Data(data=body)) or b""
        data += session.http.send(h11.EndOfMessage()) or b""
        session.tls.write(data)
        return session

    def request(self, method: str, path: str, doc: object | None = None) -> tuple[int, Any]:
        """One API request to the enclave over the private path; (status, JSON answer)."""
        session = self._send_http(method, path, doc)
        try:
            status, answer = self._answer(session)
            self._facts.saw(answer)  # the model it names, for the report
            return status, answer
        except BaseException:
            self._drop(session)  # a request left without its whole answer ends the session
            raise

    def _answer(self, session: _Session) -> tuple[int, Any]:
        status, chunks = 0, bytearray()
        for _ in range(MAX_ROUNDS):
            self._exchange(session)
            for event in self._http_read(session):
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._next_cycle(session)
                    answer = load_json(bytes(chunks), "the enclave's answer") if chunks else None
                    return status, answer
        raise PrivprocError("the enclave did not answer in time")

    @staticmethod
    def _http_read(session: _Session) -> Iterator[object]:
        """The HTTP events in what TLS has decrypted so far (none for no new bytes: an empty
        read is not the end of the connection)."""
        data = session.tls.read()
        try:
            if data:
                session.http.receive_data(data)
            while (event := session.http.next_event()) is not h11.NEED_DATA:
                yield event
        except h11.ProtocolError:
            raise TransportError("the enclave's HTTP answer is malformed") from None

    def _streamed_records(self, session: _Session) -> Iterator[bytes]:
        """Send what TLS has queued as a chunked OHTTP request; yield the enclave's records as
        the gateway forwards them (the Binary HTTP answer's content chunks)."""
        request = bhttp.Request.build(
            "POST",
            f"{GATEWAY_AUTHORITY}/v1/sessions/{session.id}",
            content=session.tls.send_pending(),
        )
        inner = bhttp.encode_request(request, bhttp.Framing.shortest())
        decoder = bhttp_stream.ResponseStreamDecoder()
        pieces = self._ohttp.send_chunked(self.config.relay_url, self._config(), inner)

        def events() -> Iterator[bhttp_stream.Event]:
            for piece in pieces:
                yield from decoder.receive(piece)
            yield from decoder.close()

        status, detail = 0, b""
        try:
            for event in events():
                if isinstance(event, bhttp_stream.Head):
                    status = event.status
                elif isinstance(event, bhttp_stream.Content) and status == 200:
                    yield event.data
                elif isinstance(event, bhttp_stream.Content):
                    detail = (detail + event.data)[:4096]
        except DecodeError:
            raise StreamTruncatedError(
                "the gateway's answer ended before its end; it is not the whole answer"
            ) from None
        if status in (404, 502):
            raise EnclaveLostError("the enclave holding this session is gone; retry")
        if status != 200:
            raise _refused("the gateway refused the stream", status, detail)

    def stream_request(self, method: str, path: str, doc: object | None = None) -> StreamedAnswer:
        """One API request whose answer is handed out as it is produced (a streamed chat
        completion's server-sent events). Returns once the answer's status has arrived."""
        session = self._send_http(method, path, doc)
        records = self._streamed_records(session)
        events = self._http_events(session, records)
        try:
            head = next(e for e in events if isinstance(e, h11.Response))
        except BaseException:
            self._drop(session)
            raise
        content_type = ""
        for name, value in head.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")

        def body() -> Iterator[bytes]:
            complete = False
            try:
                for event in events:
                    if isinstance(event, h11.Data):
                        yield bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        complete = True
                        self._next_cycle(session)
                        break
                events.close()
                for piece in records:  # the stream's own end (Binary HTTP, chunked OHTTP)
                    session.tls.receive(piece)
            except StreamTruncatedError:
                if not complete:
                    raise
                self._drop(session)  # the answer is whole (TLS says so); the session is not
            finally:
                if not complete:
                    self._drop(session)

        return StreamedAnswer(head.status_code, content_type, body())

    def _http_events(
        self, session: _Session, records: Iterator[bytes]
    ) -> Generator[object, None, None]:
        """The enclave's HTTP events as its records arrive; if the records end before the HTTP
        answer does, the answer was cut: `StreamTruncatedError`."""
        for piece in records:
            session.tls.receive(piece)
            yield from self._http_read(session)
        raise StreamTruncatedError(
            "the enclave's answer ended before its authenticated end (the last HTTP chunk inside "
            "TLS); what arrived is not the whole answer"
        )

    def _next_cycle(self, session: _Session) -> None:
        """A whole answer has arrived: ready the session for the next request, unless the
        enclave said this was its last (`connection: close`: its request budget or lifetime is
        spent, and it has forgotten the session): then the next request opens a new one."""
        if session.http.their_state is h11.MUST_CLOSE:
            if self._session is session:
                self._session = None
            self._step("the enclave ended the session with this answer; the next opens a new one")
            return
        session.http.start_next_cycle()

    def _drop(self, session: _Session) -> None:
        """Forget a session that cannot carry another request (its answer was cut)."""
        if self._session is session:
            self.close_session()

    # --- Tasks (each checked against the user's controls first, each noted in the report) ------

    def _use(
        self, feature: str, chat_id: str | None, call: Callable[[], T], note_ok: bool = True
    ) -> T:
        self.settings.require(feature, chat_id)  # before anything leaves the device
        facts = self._facts = _UseFacts()
        try:
            result = self._retrying(call)
        except AttestationRejectedError as exc:
            ids = ",".join(c.id for c in exc.report.failures)
            self._note(feature, f"attestation refused: {ids}", exc.report, facts)
            raise
        except PrivprocError as exc:
            self._note(feature, f"failed: {type(exc).__name__}", None, facts)
            raise
        if note_ok:
            self._note(feature, "ok", self.last_attestation, facts)
        return result

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call()`, tried again while it fails with a retryable error (a party restarting or busy,
        a lost enclave, a cut stream), within `retry_budget` seconds: after the party's
        Retry-After when it gave one, else after a jittered, doubling backoff; a lost enclave is
        retried at once the first time (the new session goes to a healthy enclave). Safe: these
        requests change nothing, and a failed one carried no answer."""
        deadline = time.monotonic() + self.retry_budget
        backoff, attempt = RETRY_FIRST, 1
        while True:
            try:
                return call()
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
                self._step(f"{exc} ({type(exc).__name__}): trying again in {wait:.1f} s")
                time.sleep(wait)
                attempt += 1

    def call(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> tuple[int, Any]:
        """Any enclave API request as a use of `feature` (checked and reported like the tasks)."""
        return self._use(feature, chat_id, lambda: self.request(method, path, doc))

    def call_stream(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> StreamedAnswer:
        """`stream_request` as a use of `feature`: checked against the controls before anything
        is sent, tried again like every use if it fails in a retryable way before the answer
        starts (`_retrying`), and noted in the report when the answer has ended, failed, or was
        stopped by the caller ("stopped")."""
        answer = self._use(feature, chat_id, lambda: self.stream_request(method, path, doc), False)
        facts, attestation = self._facts, self.last_attestation
        events = answer.content_type.startswith("text/event-stream")

        def pieces() -> Iterator[bytes]:
            # The stream's start, kept until its first event (which names the model) is whole.
            head: bytearray | None = bytearray() if events else None
            try:
                for piece in answer.pieces:
                    if head is not None:
                        head += piece
                        if b"\n\n" in head or len(head) > MODEL_SNIFF_LIMIT:
                            sniff_first_event(bytes(head), facts)
                            head = None
                    yield piece
            except PrivprocError as exc:
                self._note(feature, f"failed: {type(exc).__name__}", None, facts)
                raise
            except GeneratorExit:  # the caller stopped reading: still a use, and said so
                self._note(feature, "stopped", attestation, facts)
                raise
            self._note(feature, "ok", attestation, facts)

        return StreamedAnswer(answer.status, answer.content_type, pieces())

    def _provenance(self, attestation: VerificationReport | None) -> Provenance:
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

    def _note(
        self,
        feature: str,
        outcome: str,
        attestation: VerificationReport | None,
        facts: _UseFacts,
    ) -> None:
        """Add this use to the report: what served it, never what it carried."""
        where = self._provenance(attestation)
        release = self._release()
        paid = self._paid
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
            gateway_key_id=self._key_config.key_id if self._key_config is not None else None,
            token_key_epoch=paid.not_before if paid is not None else None,
            token_key_log_index=paid.log_index if paid is not None else None,
            fresh_session=facts.fresh,
        )
        self.report.add(entry)

    def _task(self, path: str, doc: object, what: str) -> dict[str, Any]:
        status, answer = self.request("POST", path, doc)
        return task_answer(status, answer, what)

    def _card(self, answer: dict[str, Any]) -> ModelCard | None:
        """The card of the model that gave `answer` (shown as a step: `--verbose` names it)."""
        card = model_card_of(answer)
        self._step(f"model: {card.label()}" if card else "model: the enclave named none")
        return card

    def summarize(self, chat: list[dict[str, str]], *, chat_id: str | None = None) -> Summary:
        """A summary of `chat` (messages with sender, time and text)."""

        def call() -> Summary:
            doc = self._task("/v1/tasks/summarize", {"chat": chat}, "summarise")
            where = self._provenance(self.last_attestation)
            return Summary(str(doc["summary"]), where, self._card(doc))

        return self._use("summaries", chat_id, call)

    def rewrite(self, text: str, style: str, *, chat_id: str | None = None) -> Rewrite:
        """`text` rewritten in `style` (rephrase, professional, funny, supportive, proofread)."""

        def call() -> Rewrite:
            doc = self._task("/v1/tasks/rewrite", {"text": text, "style": style}, "rewrite")
            where = self._provenance(self.last_attestation)
            return Rewrite(str(doc["text"]), style, where, self._card(doc))

        return self._use("writing-help", chat_id, call)

    def chat(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatReply:
        """The model's answer to `prompt` (or to a list of OpenAI-style messages). `temperature`
        (0 to 2, the enclave's default 0.2): 0 always picks the likeliest next token."""
        body = _chat_body(prompt, max_tokens, temperature)

        def call() -> ChatReply:
            doc = self._task("/v1/chat/completions", body, "answer")
            choice, usage = doc["choices"][0], doc.get("usage") or {}
            return ChatReply(
                str(choice["message"]["content"]),
                str(doc.get("model", "")),
                str(choice.get("finish_reason") or "stop"),
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                self._provenance(self.last_attestation),
                self._card(doc),
            )

        return self._use("chat", chat_id, call)

    def chat_stream(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatStream:
        """The model's answer as it is produced, piece by piece. The iteration ends at the
        answer's authenticated end; a cut stream raises `StreamTruncatedError`. Its
        `finish_reason` says, once it has ended, whether max_tokens cut it ("length")."""
        doc = {**_chat_body(prompt, max_tokens, temperature), "stream": True}
        answer = self.call_stream("POST", "/v1/chat/completions", doc, feature="chat",
                                  chat_id=chat_id)  # fmt: skip
        if answer.status != 200:
            detail = b"".join(answer)[:4096].decode("utf-8", "replace")
            raise PeerRejectedError(f"the enclave could not answer: {detail}", answer.status)
        return ChatStream(answer, self._step)

    def incognito_chat(self, **options: Unpack[ChatOptions]) -> IncognitoChat:
        """A multi-turn chat held in this object's memory only, sent whole each turn and
        forgotten by `new()`, `close()` or the end of its `with` block
        (parties/device/incognito.py):
        `send(text)` -> `ChatReply`, `stream(text)` -> the pieces. At most `max_turns` exchanges
        and `max_chars` characters a turn; beyond, the oldest exchanges are forgotten
        (`on_overflow="refuse"`: `ChatTooLongError`)."""
        return IncognitoChat(self, **options)


def model_of(answer: object) -> tuple[str, str]:
    """(name, digest) of the model an enclave's answer names: its checked `model_card`
    (`model_card_of`) when it has one, else OpenAI's `model` field; empty where it names none.
    What it names is bounded and printable (`report_text`); nothing else of the answer is read."""
    if not isinstance(answer, dict):
        return "", ""
    card = model_card_of(answer)
    if card is not None:
        return report_text(card.name), report_text(card.digest)
    plain = answer.get("model")
    return report_text(plain if isinstance(plain, str) else ""), ""


def relay_label(url: str) -> str:
    """The relay as the report names it: its URL without credentials, query or fragment."""
    try:
        kept = httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""
    return report_text(str(kept))


def sniff_first_event(head: bytes, facts: _UseFacts) -> None:
    """Note the model that the first event of a streamed answer (server-sent events) names."""
    with contextlib.suppress(DecodeError):  # a stream that does not start as expected: no name
        first = next(data_events([head]), None)
        if first is not None:
            facts.saw(load_json(first, "an event"))


def _chat_body(
    prompt: str | list[dict[str, str]], max_tokens: int | None, temperature: float | None
) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    doc: dict[str, Any] = {"messages": messages}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    if temperature is not None:
        doc["temperature"] = temperature
    return doc


def task_answer(status: int, answer: object, what: str) -> dict[str, Any]:
    """The enclave's answer to a task, or the typed error it stands for: `UnusableAnswerError`
    when the model could not do the task (empty or echoing answers), `PeerRejectedError` else."""
    if status == 422 and _error_type(answer) == UnusableAnswerError.API_TYPE:
        raise UnusableAnswerError(_reason(answer))
    if status != 200 or not isinstance(answer, dict):
        raise PeerRejectedError(f"the enclave could not {what}: {_reason(answer)}", status)
    return answer


def _error_type(answer: object) -> str | None:
    """The type of the enclave's error (OpenAI's error shape), if the answer is one."""
    with contextlib.suppress(AttributeError, TypeError, KeyError):
        return str(answer["error"]["type"])  # type: ignore[index]
    return None


def _reason(answer: object) -> str:
    """The enclave's error message (OpenAI's error shape), never more than a line."""
    with contextlib.suppress(AttributeError, TypeError, KeyError):
        return str(answer["error"]["message"])[:300]  # type: ignore[index]
    return str(answer)[:300]


class ChatStream(Iterator[str]):
    """The text of a streamed chat completion, piece by piece; an `error` event raises. It ends
    only at the answer's authenticated end (after `[DONE]`), so an iteration that ends is whole.
    `finish_reason` is known once it has ended: "stop", or "length" when max_tokens cut it;
    `model_card`, once the first piece has come, which model answers."""

    def __init__(
        self, answer: StreamedAnswer, on_step: Callable[[str], None] | None = None
    ) -> None:
        self._answer = answer
        self._pieces = self._texts()
        self._step = on_step or (lambda _message: None)
        self.finish_reason: str | None = None
        self.model_card: ModelCard | None = None

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    def _texts(self) -> Generator[str, None, None]:
        done = False
        try:
            for data in data_events(self._answer):
                if done:
                    raise TransportError("the enclave's stream goes on after [DONE]")
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    doc = load_json(data, "an event")
                except DecodeError:
                    raise TransportError("the enclave's stream is not JSON events") from None
                if not isinstance(doc, dict):
                    raise TransportError("the enclave's stream is not JSON events")
                if "error" in doc:
                    raise PeerRejectedError(f"the model failed mid-answer: {doc['error']}", 503)
                if self.model_card is None and (card := model_card_of(doc)) is not None:
                    self.model_card = card
                    self._step(f"model: {card.label()}")
                for choice in doc.get("choices", ()):
                    text = (choice.get("delta") or {}).get("content")
                    if choice.get("finish_reason"):
                        self.finish_reason = str(choice["finish_reason"])
                    if text:
                        yield str(text)
            if not done:
                raise TransportError("the enclave's stream ended without [DONE]")
        finally:
            self._answer.close()


class AsyncPrivateProcessingClient:
    """The same client for asyncio code: each call runs the private path in a worker thread,
    one at a time (one attested session).

        async with AsyncPrivateProcessingClient.from_state(state / "client") as client:
            summary = await client.summarize(chat)
    """

    def __init__(self, client: PrivateProcessingClient) -> None:
        self.sync = client
        self._lock = asyncio.Lock()

    @classmethod
    def from_state(
        cls, state_dir: Path, *, on_step: Callable[[str], None] | None = None
    ) -> AsyncPrivateProcessingClient:
        return cls(PrivateProcessingClient.from_state(state_dir, on_step=on_step))

    async def __aenter__(self) -> AsyncPrivateProcessingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.sync.close)

    async def summarize(self, chat: list[dict[str, str]], *, chat_id: str | None = None) -> Summary:
        async with self._lock:
            return await asyncio.to_thread(self.sync.summarize, chat, chat_id=chat_id)

    async def rewrite(self, text: str, style: str, *, chat_id: str | None = None) -> Rewrite:
        async with self._lock:
            return await asyncio.to_thread(self.sync.rewrite, text, style, chat_id=chat_id)

    async def chat(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatReply:
        async with self._lock:
            return await asyncio.to_thread(
                functools.partial(self.sync.chat, max_tokens=max_tokens, temperature=temperature),
                prompt,
                chat_id=chat_id,
            )

    async def chat_stream(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """The answer as it is produced; the session is held until the stream ends."""
        async with self._lock:
            pieces = await asyncio.to_thread(
                functools.partial(
                    self.sync.chat_stream, max_tokens=max_tokens, temperature=temperature
                ),
                prompt,
                chat_id=chat_id,
            )
            try:
                while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                    yield piece
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    await asyncio.to_thread(close)

    def incognito_chat(self, **options: Unpack[ChatOptions]) -> AsyncIncognitoChat:
        """`PrivateProcessingClient.incognito_chat`, for asyncio code (`await send(text)`,
        `async for piece in stream(text)`, `async with`)."""
        return AsyncIncognitoChat(self, **options)


def model_card_of(answer: object) -> ModelCard | None:
    """The `"model_card"` of an enclave's answer (or a stream's first chunk); None when it has
    none or one that is not a card (a label that cannot be read is not shown)."""
    if not isinstance(answer, dict) or "model_card" not in answer:
        return None
    try:
        return ModelCard.from_dict(answer["model_card"])
    except DecodeError:
        return None
