"""Benchmark (not a test): Privacy Pass token verification and issuance per second, next to the
raw RSA operation each one rests on.

    make bench            # or: .venv/bin/python bench/bench_tokens.py [--seconds 1.5]

Targets (one core): verification without the spent-token store at least 70% of the raw RSA-PSS
verify rate; issuance through the real issuer over HTTP at least 300 tokens a second (2048-bit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from privproc.parties.gateway.verifier import TokenVerifier
from privproc.tokens import blindrsa, issuance
from privproc.tokens.auth import TokenChallenge, b64url_decode, format_authorization
from privproc.tokens.directory import VerificationKey
from timing import paired_rates

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


class _NoStore:
    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        return True

    async def is_spent(self, token_id: bytes) -> bool:
        return False

    async def aclose(self) -> None:
        return None


def bench_crypto(seconds: float) -> tuple[float, float]:
    key = rsa.generate_private_key(65537, 2048)
    spki = issuance.encode_token_key(key.public_key())
    challenge = TokenChallenge(2, "issuer.example", b"", ("gateway.example",))
    request, state = issuance.begin(challenge.encode(), spki)
    token = state.finish(issuance.sign_request(key, request))
    now = time.time()
    verifier = TokenVerifier(
        [challenge], _NoStore(), [VerificationKey(spki, int(now) - 60, int(now) + 3600)]
    )
    authorization = format_authorization(token)
    message = token.authenticator_input()
    public_key = key.public_key()

    check, raw_verify = paired_rates(
        lambda: verifier.check(authorization, now),
        lambda: public_key.verify(token.authenticator, message, PSS, hashes.SHA384()),
        seconds,
    )
    blind_sign, raw_sign = paired_rates(
        lambda: blindrsa.blind_sign(key, request.blinded_msg),
        lambda: key.sign(message, PSS, hashes.SHA384()),
        seconds,
    )
    rows = [
        ("token verification (header to verdict)", check, raw_verify, "RSA-PSS verify"),
        ("blind signature (issuer, per token)", blind_sign, raw_sign, "RSA-PSS sign (OpenSSL)"),
    ]
    print(f"{'operation':42} {'privproc/s':>11} {'floor/s':>10}  {'share':>6}  floor")
    for op, ours, floor, what in rows:
        print(f"{op:42} {ours:11.0f} {floor:10.0f}  {ours / floor:6.0%}  {what}")
    return check / raw_verify, blind_sign


def bench_issuer_http(seconds: float, workers: int) -> float:
    """Tokens per second from `privproc serve issuer` pinned to one core, clients on the other."""
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "issuer"
        cli = [sys.executable, "-m", "privproc.cli"]
        secret = subprocess.run(
            [*cli, "issuer", "add-account", "bench", "--state", str(state)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        server_core = {cores[0]}
        log = (Path(tmp) / "issuer.log").open("w")
        proc = subprocess.Popen(
            [*cli, "serve", "issuer", "--port", "0", "--state", str(state), "--quota", "1000000"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, server_core),
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("ready issuer "):
                proc.wait(10)
                raise SystemExit(f"the issuer did not start: {log.name}")
            url = line.split()[-1]
            if len(cores) > 1:
                os.sched_setaffinity(0, set(cores[1:]))
            directory = httpx.get(url + issuance.WELL_KNOWN_DIRECTORY).json()
            spki = b64url_decode(directory["token-keys"][0]["token-key"], "token-key")
            challenge = TokenChallenge(2, "issuer.example").encode()
            body = issuance.begin(challenge, spki)[0].encode()
            headers = {
                "authorization": f"Bearer {secret}",
                "content-type": issuance.MEDIA_TYPE_REQUEST,
            }
            counts = [0] * workers
            stop = time.perf_counter() + seconds

            def work(i: int) -> None:
                with httpx.Client() as http:
                    while time.perf_counter() < stop:
                        response = http.post(url + "/token-request", content=body, headers=headers)
                        assert response.status_code == 200, response.status_code
                        counts[i] += 1

            start = time.perf_counter()
            threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
        finally:
            os.sched_setaffinity(0, set(cores))
            proc.terminate()
            proc.wait(10)
            log.close()
    issued = sum(counts) / elapsed
    where = "one core" if len(cores) > 1 else "the only core, shared with the clients"
    print(f"{'issuance over HTTP (' + where + ')':42} {issued:11.0f}")
    return issued


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--workers", type=int, default=8, help="concurrent issuance clients")
    args = parser.parse_args()
    share, _ = bench_crypto(args.seconds)
    issued = bench_issuer_http(max(3.0, 2 * args.seconds), args.workers)
    print(
        f"\nverification: {share:.0%} of raw RSA-PSS verify (target >= 70%); "
        f"issuance: {issued:.0f} tokens/s over HTTP (target >= 300)"
    )


if __name__ == "__main__":
    main()
