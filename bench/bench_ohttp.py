"""Benchmark (not a test): HPKE seal/open and OHTTP gateway work per second, next to the floor
set by `cryptography`'s one-shot HPKE on the same suite.

    make bench            # or: .venv/bin/python bench/bench_ohttp.py [--seconds 1.0]

The gateway's hot path is "decapsulate a request and encapsulate its response". Its floor is the
least any gateway must do for the request: one one-shot HPKE open (`cryptography`'s Rust
implementation). The target is a ratio of at most 2.0.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hpke as chpke

from privproc import hpke
from privproc.ohttp.keys import GatewayKey, KeyRing
from privproc.ohttp.messages import decapsulate_request, encapsulate_request

REQUEST = os.urandom(1024)  # a typical small private request
RESPONSE = os.urandom(2048)

SUITES: list[tuple[str, hpke.Kem, Any, Any]] = [
    ("X25519/HKDF-SHA256/AES-128-GCM", hpke.KEM_X25519_HKDF_SHA256, chpke.KEM.X25519, hpke.AEAD_AES_128_GCM),
    ("X-Wing/HKDF-SHA256/AES-128-GCM", hpke.KEM_XWING, chpke.KEM.MLKEM768_X25519, hpke.AEAD_AES_128_GCM),
    ("ML-KEM-768/HKDF-SHA256/AES-128-GCM", hpke.KEM_MLKEM768, chpke.KEM.MLKEM768, hpke.AEAD_AES_128_GCM),
    ("P-256/HKDF-SHA256/AES-128-GCM", hpke.KEM_P256_HKDF_SHA256, chpke.KEM.P256, hpke.AEAD_AES_128_GCM),
]


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Operations per second: best of three runs of about `seconds` / 3 each."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def crypto_keys(sk: hpke.PrivateKey) -> tuple[Any, Any]:
    if sk.kem is hpke.KEM_XWING:
        pq, t = sk._key  # type: ignore[misc]
        return chpke.MLKEM768X25519PrivateKey(pq, t), chpke.MLKEM768X25519PublicKey(pq.public_key(), t.public_key())
    return sk._key, sk.public_key._key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    s = args.seconds
    print(f"{'suite':38} {'operation':30} {'privproc/s':>11} {'floor/s':>11} {'ratio':>6}")
    worst = 0.0
    for name, kem, ckem, aead in SUITES:
        suite = hpke.CipherSuite(kem, hpke.KDF_HKDF_SHA256, aead)
        csuite = chpke.Suite(ckem, chpke.KDF.HKDF_SHA256, chpke.AEAD.AES_128_GCM)
        sk = kem.generate_key_pair()
        c_sk, c_pk = crypto_keys(sk)
        info = b"bench"

        seal = rate(lambda: suite.seal(sk.public_key, REQUEST, info), s)
        c_seal = rate(lambda: csuite.encrypt(REQUEST, c_pk, info=info), s)
        enc, ct = suite.seal(sk.public_key, REQUEST, info)
        blob = enc + ct
        open_ = rate(lambda: suite.open(enc, sk, ct, info), s)
        c_open = rate(lambda: csuite.decrypt(blob, c_sk, info=info), s)

        gw = GatewayKey.generate(1, kem, [(hpke.KDF_HKDF_SHA256, aead)])
        ring = KeyRing([gw])
        body, _ = encapsulate_request(gw.config, REQUEST)

        def gateway_work() -> bytes:
            _inner, ctx = decapsulate_request(ring, body)
            return ctx.encapsulate_response(RESPONSE)

        gateway = rate(gateway_work, s)
        rows = [
            ("HPKE seal (single shot)", seal, c_seal),
            ("HPKE open (single shot)", open_, c_open),
            ("OHTTP decapsulate + response", gateway, c_open),
        ]
        for op, ours, floor in rows:
            ratio = floor / ours
            print(f"{name:38} {op:30} {ours:11.0f} {floor:11.0f} {ratio:6.2f}")
        worst = max(worst, c_open / gateway)
    print(f"\nworst gateway ratio (decapsulate + response vs one-shot open): {worst:.2f} (target <= 2.0)")


if __name__ == "__main__":
    main()
