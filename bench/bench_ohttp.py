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
from typing import Any, cast

from cryptography.hazmat.primitives import hpke as chpke

from privproc import hpke
from privproc.ohttp.keys import GatewayKey, KeyRing
from privproc.ohttp.messages import decapsulate_request, encapsulate_request
from timing import rate

REQUEST = os.urandom(1024)  # a typical small private request
RESPONSE = os.urandom(2048)

_AES128 = hpke.AEAD_AES_128_GCM
SUITES: list[tuple[str, hpke.Kem, Any, hpke.Aead]] = [
    ("X25519/HKDF-SHA256/AES-128-GCM", hpke.KEM_X25519_HKDF_SHA256, chpke.KEM.X25519, _AES128),
    ("X-Wing/HKDF-SHA256/AES-128-GCM", hpke.KEM_XWING, chpke.KEM.MLKEM768_X25519, _AES128),
    ("ML-KEM-768/HKDF-SHA256/AES-128-GCM", hpke.KEM_MLKEM768, chpke.KEM.MLKEM768, _AES128),
    ("P-256/HKDF-SHA256/AES-128-GCM", hpke.KEM_P256_HKDF_SHA256, chpke.KEM.P256, _AES128),
]


def crypto_keys(sk: hpke.PrivateKey) -> tuple[Any, Any]:
    if sk.kem is hpke.KEM_XWING:
        pq, t = cast(Any, sk._key)
        public = chpke.MLKEM768X25519PublicKey(pq.public_key(), t.public_key())
        return chpke.MLKEM768X25519PrivateKey(pq, t), public
    return sk._key, sk.public_key._key


def bench_suite(name: str, kem: hpke.Kem, ckem: Any, aead: hpke.Aead, s: float) -> float:
    """Print one suite's rows; return its gateway ratio."""
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
        print(f"{name:38} {op:30} {ours:11.0f} {floor:11.0f} {floor / ours:6.2f}")
    return c_open / gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    print(f"{'suite':38} {'operation':30} {'privproc/s':>11} {'floor/s':>11} {'ratio':>6}")
    worst = max(bench_suite(*spec, args.seconds) for spec in SUITES)
    print(
        f"\nworst gateway ratio (decapsulate + response vs one-shot open): {worst:.2f} "
        "(target <= 2.0)"
    )


if __name__ == "__main__":
    main()
