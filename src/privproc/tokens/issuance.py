"""Privacy Pass issuance for token type 0x0002, Blind RSA 2048 (RFC 9578 §6).

Rules of this module:
- Sans-IO: the client side is `begin` -> (TokenRequest, IssuanceState) and `IssuanceState.finish`;
  the issuer's side is `sign_request`; anyone holding the public key can `verify_token`.
- Token keys travel as RFC 9578 §6.5 SubjectPublicKeyInfo with the id-RSASSA-PSS OID and explicit
  SHA-384 / MGF1-SHA-384 / 48-byte-salt parameters; `token_key_id` is SHA-256 of exactly those
  bytes. `decode_token_key` accepts only that canonical encoding of a 2048-bit key.
- The issuer sees only the blinded message and a one-byte key hint; nothing it holds can link its
  signature to the token that is later redeemed (RFC 9474 blindness).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.errors import DecodeError, InvalidKeyError, TrailingDataError
from privproc.tokens import blindrsa
from privproc.tokens.auth import TOKEN_TYPE_BLIND_RSA, Token
from privproc.wire import Reader

__all__ = [
    "MEDIA_TYPE_DIRECTORY",
    "MEDIA_TYPE_REQUEST",
    "MEDIA_TYPE_RESPONSE",
    "NK",
    "IssuanceState",
    "TokenRequest",
    "begin",
    "decode_token_key",
    "encode_token_key",
    "sign_request",
    "token_key_id",
    "verify_token",
]

MEDIA_TYPE_DIRECTORY = "application/private-token-issuer-directory"
MEDIA_TYPE_REQUEST = "application/private-token-request"
MEDIA_TYPE_RESPONSE = "application/private-token-response"
WELL_KNOWN_DIRECTORY = "/.well-known/private-token-issuer-directory"

NK = 256  # authenticator and blinded-message size: 2048-bit modulus
MODULUS_BITS = 2048
VARIANT = blindrsa.RSABSSA_SHA384_PSS_DETERMINISTIC  # RFC 9578 §6.4: 48-byte salt

# AlgorithmIdentifier { id-RSASSA-PSS, RSASSA-PSS-params { sha384, mgf1(sha384), saltLength 48 } },
# DER, exactly as RFC 9578 §6.5 shows it (hash OIDs without NULL parameters).
_PSS_ALGORITHM = bytes.fromhex(
    "303d06092a864886f70d01010a3030"
    "a00d300b0609608648016503040202"
    "a11a301806092a864886f70d010108300b0609608648016503040202"
    "a203020130"
)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(content)) + content


def encode_token_key(public_key: rsa.RSAPublicKey) -> bytes:
    """The RFC 9578 §6.5 SPKI of a token key (the `token-key` value, before base64url)."""
    pkcs1 = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return _der(0x30, _PSS_ALGORITHM + _der(0x03, b"\x00" + pkcs1))


def decode_token_key(spki: bytes) -> rsa.RSAPublicKey:
    """Parse a token key; only the canonical RSASSA-PSS SPKI of a 2048-bit key is accepted."""
    if len(spki) > 1024:
        raise InvalidKeyError("the token key is too long for a 2048-bit RSA key")
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKeyError("the token key is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != MODULUS_BITS:
        raise InvalidKeyError("a type 0x0002 token key is a 2048-bit RSA key")
    if encode_token_key(key) != spki:
        raise InvalidKeyError("the token key is not the RSASSA-PSS SPKI that RFC 9578 requires")
    return key


def token_key_id(spki: bytes) -> bytes:
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True)
class TokenRequest:
    """struct { uint16 token_type; uint8 truncated_token_key_id; uint8 blinded_msg[Nk]; }"""

    truncated_token_key_id: int
    blinded_msg: bytes = field(repr=False)
    token_type: int = TOKEN_TYPE_BLIND_RSA

    def encode(self) -> bytes:
        return (
            self.token_type.to_bytes(2, "big")
            + bytes((self.truncated_token_key_id,))
            + self.blinded_msg
        )

    @classmethod
    def decode(cls, data: bytes) -> TokenRequest:
        r = Reader(data)
        token_type = r.uint(2, "token type")
        if token_type != TOKEN_TYPE_BLIND_RSA:
            raise DecodeError(f"token type 0x{token_type:04x} is not supported")
        truncated = r.uint(1, "truncated token key id")
        blinded = r.read(NK, "blinded message")
        if not r.at_end():
            raise TrailingDataError("bytes follow the token request")
        return cls(truncated, blinded, token_type)


def decode_token_response(data: bytes) -> bytes:
    """struct { uint8 blind_sig[Nk]; }: returns blind_sig."""
    if len(data) != NK:
        raise DecodeError(f"a token response is {NK} bytes")
    return data


@dataclass(frozen=True)
class IssuanceState:
    """What the client keeps between its request and the issuer's response. Secret."""

    public_key: rsa.RSAPublicKey
    nonce: bytes
    challenge_digest: bytes
    key_id: bytes
    blinding: blindrsa.BlindingState

    def __repr__(self) -> str:
        return "<IssuanceState>"

    def finish(self, response: bytes) -> Token:
        """RFC 9578 §6.3: unblind and verify the issuer's signature, giving the Token."""
        blind_sig = decode_token_response(response)
        authenticator = blindrsa.finalize(self.public_key, VARIANT, blind_sig, self.blinding)
        return Token(
            TOKEN_TYPE_BLIND_RSA, self.nonce, self.challenge_digest, self.key_id, authenticator
        )


def begin(
    challenge: bytes,
    token_key: bytes,
    *,
    nonce: bytes | None = None,
    salt: bytes | None = None,
    r: int | None = None,
) -> tuple[TokenRequest, IssuanceState]:
    """RFC 9578 §6.1, the client's request for one token bound to `challenge` (its raw bytes).

    `nonce`, `salt` and `r` are test knobs for the RFC's known-answer vectors."""
    public_key = decode_token_key(token_key)
    key_id = token_key_id(token_key)
    nonce = secrets.token_bytes(32) if nonce is None else nonce
    if len(nonce) != 32:
        raise DecodeError("a token nonce is 32 bytes")
    digest = hashlib.sha256(challenge).digest()
    token_input = TOKEN_TYPE_BLIND_RSA.to_bytes(2, "big") + nonce + digest + key_id
    blinded, blinding = blindrsa.blind(public_key, VARIANT, token_input, salt=salt, r=r)
    request = TokenRequest(key_id[-1], blinded)
    return request, IssuanceState(public_key, nonce, digest, key_id, blinding)


def sign_request(private_key: rsa.RSAPrivateKey, request: TokenRequest) -> bytes:
    """RFC 9578 §6.2, the issuer's side: the TokenResponse (blind_sig) for a decoded request."""
    return blindrsa.blind_sign(private_key, request.blinded_msg)


def verify_token(public_key: rsa.RSAPublicKey, token: Token) -> None:
    """RFC 9578 §6.4: RSASSA-PSS-VERIFY over the authenticator input; raises on failure."""
    if token.token_type != TOKEN_TYPE_BLIND_RSA:
        raise DecodeError("not a type 0x0002 token")
    blindrsa.verify(public_key, VARIANT, token.authenticator_input(), token.authenticator)
