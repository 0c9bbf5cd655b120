"""The device's client configuration (`STATE/client/client.json`): where the relay, the CDN, the
log and the issuer are, and what the device trusts (the log's and the witnesses' keys, hardware
roots, a minimum TCB above the built-in one).

Rules: read once, checked whole (a file that does not read is a `DecodeError` naming the file,
never a partial configuration); nothing here talks to any party.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from privproc.attest.amd import TrustAnchors, TrustedChain
from privproc.attest.appraisal import AttestationPolicy
from privproc.attest.bulletins import raised_minimum_tcb
from privproc.attest.snp import Product, SigningKey, TcbParts
from privproc.errors import DecodeError, PrivprocError, UsageError
from privproc.tlog.client import LogPolicy
from privproc.wire import load_json

__all__ = ["ClientConfig", "NotConfiguredError"]


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


def _merge_amd(extra: TrustAnchors) -> TrustAnchors:
    """AMD's anchors for every (product, kind) the extra anchors do not claim."""
    claimed = {(c.product, c.kind) for c in extra.chains}
    kept = [c for c in TrustAnchors.amd().chains if (c.product, c.kind) not in claimed]
    return TrustAnchors.of([*kept, *extra.chains])
