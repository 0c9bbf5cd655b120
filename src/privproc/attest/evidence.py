"""The evidence bundle: everything a client needs to judge an enclave offline, in one encoding.

    struct {
        opaque magic[8] = "PPEVIDNC";
        uint8  version = 1;
        uint8  platform;                      /* 1: AMD SEV-SNP (real or virtual: the root says) */
        opaque report<1..2^16-1>;             /* the SNP attestation report, 0x4A0 bytes */
        opaque signer_cert<1..2^16-1>;        /* VCEK or VLEK, DER */
        opaque chain<0..2^16-1>;              /* ASK/ASVK then ARK, each DER, uint16 length */
        opaque manifest<0..2^24-1>;           /* the workload manifest (measurement.py) */
        opaque release_entry<0..2^16-1>;      /* the log entry of this release (tlog/entries.py) */
        uint64 log_index;                     /* its index in the log */
        opaque inclusion_proof<0..2^16-1>;    /* 32-byte hashes, leaf to root */
        opaque checkpoint<0..2^16-1>;         /* the signed, cosigned checkpoint the proof is for */
    } EvidenceBundle;

Lengths are big-endian. The whole bundle is at most `MAX_BUNDLE` bytes. Decoding is strict
(`encode(decode(b)) == b`); what the parts mean is judged by the verifier, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from privproc.errors import DecodeError, TooLargeError, TrailingDataError, UsageError
from privproc.wire import Reader

__all__ = ["MAX_BUNDLE", "PLATFORM_SEV_SNP", "EvidenceBundle"]

MAGIC = b"PPEVIDNC"
VERSION = 1
PLATFORM_SEV_SNP = 1
MAX_BUNDLE = 1 << 20
_MAX_CHAIN_CERTS = 4
_MAX_PROOF_HASHES = 64


def _opaque(data: bytes, width: int, what: str) -> bytes:
    if len(data) >= 1 << (8 * width):
        raise UsageError(f"the {what} is too long for its length field")
    return len(data).to_bytes(width, "big") + data


@dataclass(frozen=True)
class EvidenceBundle:
    report: bytes
    signer_cert: bytes
    chain: tuple[bytes, ...] = ()
    manifest: bytes = b""
    release_entry: bytes = b""
    log_index: int = 0
    inclusion_proof: tuple[bytes, ...] = ()
    checkpoint: bytes = field(default=b"", repr=False)
    platform: int = PLATFORM_SEV_SNP

    def __post_init__(self) -> None:
        if self.platform != PLATFORM_SEV_SNP:
            raise UsageError("the only evidence platform is AMD SEV-SNP (1)")
        if not self.report or not self.signer_cert:
            raise UsageError("evidence carries a report and the certificate that signed it")
        if len(self.chain) > _MAX_CHAIN_CERTS:
            raise UsageError(f"a chain has at most {_MAX_CHAIN_CERTS} certificates")
        if len(self.inclusion_proof) > _MAX_PROOF_HASHES or any(
            len(h) != 32 for h in self.inclusion_proof
        ):
            raise UsageError("an inclusion proof is at most 64 hashes of 32 bytes")
        if not 0 <= self.log_index < 2**64:
            raise UsageError("a log index is a 64-bit number")

    def encode(self) -> bytes:
        chain = b"".join(_opaque(c, 2, "certificate") for c in self.chain)
        data = b"".join(
            (
                MAGIC,
                bytes((VERSION, self.platform)),
                _opaque(self.report, 2, "report"),
                _opaque(self.signer_cert, 2, "signer certificate"),
                _opaque(chain, 2, "chain"),
                _opaque(self.manifest, 3, "manifest"),
                _opaque(self.release_entry, 2, "release entry"),
                self.log_index.to_bytes(8, "big"),
                _opaque(b"".join(self.inclusion_proof), 2, "inclusion proof"),
                _opaque(self.checkpoint, 2, "checkpoint"),
            )
        )
        if len(data) > MAX_BUNDLE:
            raise UsageError(f"an evidence bundle is at most {MAX_BUNDLE} bytes")
        return data

    @classmethod
    def decode(cls, data: bytes) -> EvidenceBundle:
        if len(data) > MAX_BUNDLE:
            raise TooLargeError(f"an evidence bundle is at most {MAX_BUNDLE} bytes")
        r = Reader(data)
        if r.read(8, "magic") != MAGIC:
            raise DecodeError("not a privproc evidence bundle")
        version = r.uint(1, "version")
        if version != VERSION:
            raise DecodeError(f"evidence bundle version {version} is not supported")
        platform = r.uint(1, "platform")
        report = r.read(r.uint(2, "report length"), "report")
        signer = r.read(r.uint(2, "certificate length"), "signer certificate")
        chain_reader = Reader(r.read(r.uint(2, "chain length"), "chain"))
        chain = []
        while not chain_reader.at_end():
            chain.append(chain_reader.read(chain_reader.uint(2, "certificate length"), "cert"))
        manifest = r.read(r.uint(3, "manifest length"), "manifest")
        entry = r.read(r.uint(2, "release entry length"), "release entry")
        index = r.uint(8, "log index")
        proof_bytes = r.read(r.uint(2, "proof length"), "inclusion proof")
        if len(proof_bytes) % 32:
            raise DecodeError("an inclusion proof is a whole number of 32-byte hashes")
        proof = tuple(proof_bytes[i : i + 32] for i in range(0, len(proof_bytes), 32))
        checkpoint = r.read(r.uint(2, "checkpoint length"), "checkpoint")
        if not r.at_end():
            raise TrailingDataError("bytes follow the evidence bundle")
        try:
            return cls(
                report, signer, tuple(chain), manifest, entry, index, proof, checkpoint, platform
            )
        except UsageError as exc:
            raise DecodeError(str(exc)) from None
