"""Privacy Pass structures against the official vectors: RFC 9577 and RFC 9578, Appendix A."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.tokens import issuance
from privproc.tokens.auth import (
    PrivateTokenChallenge,
    Token,
    TokenChallenge,
    format_www_authenticate,
    parse_www_authenticate,
)

VECTORS = Path(__file__).parent / "vectors" / "privacypass"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


TOKEN_VECTORS = _load("rfc9577-token-vectors.json")
HEADER_VECTORS = _load("rfc9577-header-vectors.json")["vectors"]
ISSUANCE_VECTORS = [
    *_load("rfc9578-issuance-vectors.json")["token_type_0x0002_blind_rsa_2048"],
    *_load("pat-go-type2-issuance-vectors.json"),
]


@pytest.mark.parametrize("v", TOKEN_VECTORS, ids=range(len(TOKEN_VECTORS)))
def test_rfc9577_challenge_and_authenticator_input(v: dict[str, str]) -> None:
    origins = bytes.fromhex(v["origin_info"]).decode()
    challenge = TokenChallenge(
        int(v["token_type"], 16),
        bytes.fromhex(v["issuer_name"]).decode(),
        bytes.fromhex(v["redemption_context"]),
        tuple(origins.split(",")) if origins else (),
    )
    encoded = challenge.encode()
    assert TokenChallenge.decode(encoded) == challenge
    token = Token(
        challenge.token_type,
        bytes.fromhex(v["nonce"]),
        challenge.digest(),
        bytes.fromhex(v["token_key_id"]),
        bytes(256),
    )
    assert token.authenticator_input().hex() == v["token_authenticator_input"]


@pytest.mark.parametrize("v", HEADER_VECTORS, ids=range(len(HEADER_VECTORS)))
def test_rfc9577_header_vectors_parse(v: dict[str, Any]) -> None:
    parsed = parse_www_authenticate(v["header"])
    assert len(parsed) == len(v["challenges"])  # the Basic challenge is skipped
    for got, want in zip(parsed, v["challenges"], strict=True):
        assert got.token_type == want["token-type"]
        assert got.challenge.hex() == want["token-challenge"]
        assert got.token_key is not None
        assert got.token_key.hex() == want["token-key"]
        assert got.max_age == want["max-age"]
    # Serialising what was parsed and parsing it again gives the same challenges.
    assert parse_www_authenticate(format_www_authenticate(parsed)) == parsed


@pytest.mark.parametrize("index", [0, 1])
def test_rfc9577_header_vectors_serialise_byte_for_byte(index: int) -> None:
    # Our serialiser writes the RFC's form; only the unknown attribute (ignored) is absent.
    v = HEADER_VECTORS[index]
    challenges = [
        PrivateTokenChallenge(
            bytes.fromhex(c["token-challenge"]), bytes.fromhex(c["token-key"]), c["max-age"]
        )
        for c in v["challenges"]
    ]
    expected = v["header"].replace(',unknownChallengeAttribute="ignore-me"', "")
    assert format_www_authenticate(challenges) == expected


def test_rfc9577_header_vector_challenge_decodes_to_default_structure() -> None:
    first = parse_www_authenticate(HEADER_VECTORS[0]["header"])[0]
    challenge = first.token_challenge()
    assert challenge.issuer_name == "issuer.example"
    assert challenge.origin_info == ("origin.example",)
    assert len(challenge.redemption_context) == 32
    assert issuance.decode_token_key(first.token_key or b"").key_size == 2048


@pytest.mark.parametrize("v", ISSUANCE_VECTORS, ids=range(len(ISSUANCE_VECTORS)))
def test_rfc9578_type2_issuance(v: dict[str, str]) -> None:
    h = {k: bytes.fromhex(x) for k, x in v.items() if k != "comment"}
    private_key = serialization.load_pem_private_key(h["skS"], None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    # The key encoding and its id.
    assert issuance.encode_token_key(private_key.public_key()) == h["pkS"]
    assert issuance.decode_token_key(h["pkS"]).public_numbers() == (
        private_key.public_key().public_numbers()
    )
    # Client: the request, from the vector's nonce, salt and blind.
    request, state = issuance.begin(
        h["token_challenge"],
        h["pkS"],
        nonce=h["nonce"],
        salt=h["salt"],
        r=int.from_bytes(h["blind"], "big"),
    )
    assert request.encode() == h["token_request"]
    assert request.truncated_token_key_id == issuance.token_key_id(h["pkS"])[-1]
    # Issuer: the response to the decoded request.
    decoded = issuance.TokenRequest.decode(h["token_request"])
    assert issuance.sign_request(private_key, decoded) == h["token_response"]
    # Client: the token, which verifies.
    token = state.finish(h["token_response"])
    assert token.encode() == h["token"]
    assert Token.decode(h["token"]) == token
    issuance.verify_token(private_key.public_key(), token)
