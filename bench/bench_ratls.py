"""Benchmark (not a test): attested TLS handshakes per second over memory transports, client and
server in one thread, with a stand-in evidence provider and verifier (an HMAC over report_data).

    .venv/bin/python bench/bench_ratls.py [--seconds 1.5] [--cpu 0]

An attested handshake is a full TLS 1.3 handshake (X25519MLKEM768 with OpenSSL's defaults), both
exporters, the evidence frame and its verification. The floor is the same TLS handshake without
attestation. The "server share" column is the part of each attested handshake spent in the
server's calls, which bounds what one enclave core can accept. The target is >= 200 attested
handshakes per second on one core; real evidence verification will add about 1 ms per handshake
on the client, not on the server.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from typing import Literal

from privproc.net.ratls import check_evidence, pump_attested, supply_evidence
from privproc.ratls.session import ClientState, client_session, pump, server_session
from privproc.ratls.tls import ServerIdentity, TlsEndpoint
from timing import rate

KEY = os.urandom(32)
REQUEST = os.urandom(1024)
RESPONSE = os.urandom(2048)


def provider(report_data: bytes) -> bytes:
    return hmac.new(KEY, report_data, hashlib.sha256).digest()


def verifier(evidence: bytes, report_data: bytes) -> bool:
    if not hmac.compare_digest(evidence, provider(report_data)):
        raise AssertionError("the stand-in evidence does not verify")
    return True


def bare_handshake(identity: ServerIdentity) -> None:
    client, server = TlsEndpoint.client(), TlsEndpoint.server(identity)
    pump(client, server)
    assert client.handshake_done


def attested_handshake(identity: ServerIdentity) -> None:
    client, server = client_session(), server_session(identity)
    pump_attested(client, server, provider, verifier)
    assert client.state is ClientState.VERIFIED


def attested_exchange(identity: ServerIdentity) -> None:
    client, server = client_session(), server_session(identity)
    pump_attested(client, server, provider, verifier)
    client.write(REQUEST)
    pump(client, server)
    server.read()
    server.write(RESPONSE)
    server.close()
    pump(client, server)
    assert len(client.read()) == len(RESPONSE)


def server_share(identity: ServerIdentity, seconds: float) -> float:
    """Fraction of an attested handshake's time spent inside the server's calls."""
    in_server = total = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        client = client_session()
        t = time.perf_counter()
        server = server_session(identity)
        in_server += time.perf_counter() - t
        while True:
            out = client.send_pending()
            if out:
                t = time.perf_counter()
                server.receive(out)
                supply_evidence(server, provider)
                in_server += time.perf_counter() - t
            t = time.perf_counter()
            back = server.send_pending()
            in_server += time.perf_counter() - t
            if back:
                client.receive(back)
                check_evidence(client, verifier)
            if not out and not back:
                break
        total += time.perf_counter() - start
    return in_server / total


def bench_identity(algorithm: Literal["p256", "ed25519"], s: float) -> float:
    """Print one certificate type's rows; return its attested handshake rate."""
    identity = ServerIdentity.generate(algorithm)
    attested_handshake(identity)  # builds the shared contexts outside the measurement
    floor = rate(lambda: bare_handshake(identity), s)
    attested = rate(lambda: attested_handshake(identity), s)
    exchange = rate(lambda: attested_exchange(identity), s)
    share = server_share(identity, s / 3)
    rows = [
        ("TLS 1.3 handshake (floor)", floor),
        ("attested handshake", attested),
        ("attested handshake + 1 KiB/2 KiB exchange", exchange),
        (f"attested handshake, server side only ({share:.0%})", attested / share),
    ]
    for op, per_second in rows:
        print(f"{algorithm:12} {op:46} {per_second:11.0f} {1000 / per_second:8.2f}")
    return attested


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(f"{'certificate':12} {'operation':46} {'per second':>11} {'ms each':>8}")
    worst = min(bench_identity(alg, args.seconds) for alg in ("p256", "ed25519"))
    print(
        f"\nattested handshakes per second, client and server in one thread: {worst:.0f} "
        "(target >= 200)"
    )


if __name__ == "__main__":
    main()
