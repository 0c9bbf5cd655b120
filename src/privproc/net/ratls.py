"""Drives attested TLS sessions with a party's evidence provider or verifier: the work the
sans-IO core (`privproc.ratls.session`) asks for and never does itself (issue 17).

    session.receive(records)
    supply_evidence(server, provider)    # a server in EVIDENCE_NEEDED: its evidence goes out
    check_evidence(client, verifier)     # a client in EVIDENCE_RECEIVED: VERIFIED, or FAILED

Rules: each helper acts only when its session waits for it, and says whether it did; the
provider or verifier is called once per session, with the session's own report_data. A
`PrivprocError` it raises passes through; anything else it raises becomes an `AttestationError`
whose cause it is. Either way the session fails first (`withhold_evidence`, `reject`: its
close_notify goes out, later calls raise `SessionFailedError`), so no caller can forget to.
"""

from __future__ import annotations

from collections.abc import Callable

from privproc.errors import PrivprocError, UsageError
from privproc.ratls.session import (
    AttestationError,
    ClientSession,
    ServerSession,
    pump,
)

__all__ = [
    "EvidenceProvider",
    "EvidenceVerifier",
    "check_evidence",
    "pump_attested",
    "supply_evidence",
]

EvidenceProvider = Callable[[bytes], bytes]
"""`(report_data) -> evidence`: the enclave's attestation over 64 bytes of report data."""

EvidenceVerifier = Callable[[bytes, bytes], object]
"""`(evidence, report_data) -> attestation`: raises a `PrivprocError` unless the evidence is
genuine, acceptable and over exactly this report_data; returns what it learnt."""


def supply_evidence(session: ServerSession, provider: EvidenceProvider) -> bool:
    """If `session` waits for evidence, ask `provider` for it over the session's report_data
    and hand it over (True); False if the session waits for nothing."""
    needed = session.pending_event
    if needed is None:
        return False
    try:
        evidence = provider(needed.report_data)
    except PrivprocError as exc:
        session.withhold_evidence(exc)
        raise
    except Exception as exc:
        error = AttestationError("the evidence provider failed unexpectedly")
        session.withhold_evidence(error)
        raise error from exc
    session.provide_evidence(evidence)  # it checks the type and the size, and fails if it must
    return True


def check_evidence(session: ClientSession, verifier: EvidenceVerifier) -> bool:
    """If `session` has received evidence, have `verifier` judge it over the session's own
    report_data and `accept` what it returns (True; it is `session.attestation`) or `reject`
    it, raising; False if the session waits for nothing."""
    received = session.pending_event
    if received is None:
        return False
    try:
        attestation = verifier(received.evidence, received.report_data)
    except PrivprocError as exc:
        session.reject(exc)
        raise
    except Exception as exc:
        error = AttestationError("the evidence verifier failed unexpectedly")
        session.reject(error)
        raise error from exc
    session.accept(attestation)
    return True


def pump_attested(
    client: ClientSession,
    server: ServerSession,
    provider: EvidenceProvider,
    verifier: EvidenceVerifier,
    *,
    max_rounds: int = 100,
) -> None:
    """In memory (tests, benchmarks): `pump` both ways, answering each session's event with
    `provider` or `verifier`, until neither has anything to send or to answer."""
    for _ in range(max_rounds):
        pump(client, server, max_rounds=max_rounds)
        if not (supply_evidence(server, provider) or check_evidence(client, verifier)):
            return
    raise UsageError(f"the sessions were still asking after {max_rounds} rounds")
