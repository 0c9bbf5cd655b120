"""Privacy Pass structures and headers: round trips, every way to be malformed, and fuzzing."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import DecodeError, InvalidKeyError, PrivprocError, UsageError
from privproc.tokens import issuance
from privproc.tokens.auth import (
    PrivateTokenChallenge,
    Token,
    TokenChallenge,
    b64url_decode,
    b64url_encode,
    format_authorization,
    parse_auth_challenges,
    parse_authorization,
    parse_www_authenticate,
)

ISSUER_KEY = rsa.generate_private_key(65537, 2048)
SPKI = issuance.encode_token_key(ISSUER_KEY.public_key())
CHALLENGE = TokenChallenge(2, "issuer.example:8401", b"", ("gateway.example",))


def _token() -> Token:
    request, state = issuance.begin(CHALLENGE.encode(), SPKI)
    return state.finish(issuance.sign_request(ISSUER_KEY, request))


# --- base64url ---------------------------------------------------------------------------------


def test_b64url_accepts_padded_and_unpadded_canonical_forms() -> None:
    data = bytes(range(40))
    padded = b64url_encode(data)
    assert padded.endswith("=")
    assert b64url_decode(padded, "x") == data
    assert b64url_decode(padded.rstrip("="), "x") == data


@pytest.mark.parametrize(
    "text",
    ["AB+C", "AB/C", "A B=", "QQ===", "QR==", "Q", "QQ=x", "Q=Q="],
    ids=["plus", "slash", "space", "extra-padding", "non-canonical-bits", "short", "junk", "mid"],
)
def test_b64url_refuses_non_canonical_or_foreign_alphabets(text: str) -> None:
    with pytest.raises(DecodeError):
        b64url_decode(text, "x")


# --- TokenChallenge and Token ------------------------------------------------------------------


def test_challenge_round_trip_and_digest() -> None:
    encoded = CHALLENGE.encode()
    assert TokenChallenge.decode(encoded) == CHALLENGE
    assert CHALLENGE.digest() == hashlib.sha256(encoded).digest()
    assert CHALLENGE.allows_origin("GATEWAY.example")
    assert not CHALLENGE.allows_origin("other.example")
    assert TokenChallenge(2, "issuer.example").allows_origin("anything.example")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated origin info
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:4] + b"\xff" + b[5:],  # issuer name length beyond the input
        lambda b: b[:2] + b"\x00\x00" + b[4:],  # empty issuer name
    ],
    ids=["truncated", "trailing", "length-overrun", "empty-issuer"],
)
def test_challenge_decode_refuses_malformed(mutate: object) -> None:
    with pytest.raises(DecodeError):
        TokenChallenge.decode(mutate(CHALLENGE.encode()))  # type: ignore[operator]


def test_challenge_refuses_bad_context_length_and_names() -> None:
    raw = bytearray(TokenChallenge(2, "i.example", bytes(32)).encode())
    raw[2 + 2 + len("i.example")] = 16  # context length 16: neither 0 nor 32
    with pytest.raises(DecodeError):
        TokenChallenge.decode(bytes(raw))
    with pytest.raises(UsageError):
        TokenChallenge(2, "user@issuer.example")  # userinfo is not a server name
    with pytest.raises(UsageError):
        TokenChallenge(2, "issuer.example", bytes(31))
    with pytest.raises(UsageError):
        TokenChallenge(2, "issuer.example", b"", ("a.example,b.example",))


def test_token_round_trip_and_refusals() -> None:
    token = _token()
    encoded = token.encode()
    assert len(encoded) == 2 + 32 + 32 + 32 + 256
    assert Token.decode(encoded) == token
    with pytest.raises(DecodeError):
        Token.decode(encoded[:-1])
    with pytest.raises(DecodeError):
        Token.decode(encoded + b"\x00")
    with pytest.raises(DecodeError, match="not supported"):
        Token.decode(b"\x7f\x3f" + encoded[2:])  # a greased type


# --- Headers -----------------------------------------------------------------------------------


def test_www_authenticate_round_trip_with_other_schemes_and_unknown_params() -> None:
    challenge = PrivateTokenChallenge(CHALLENGE.encode(), SPKI, 30)
    header = f'Bearer realm="x", {challenge.header_value()}, Basic YWxhZGRpbjpvcGVu'
    assert parse_www_authenticate(header) == [challenge]
    # Case-insensitive scheme and names, bare tokens, BWS around "=", extra parameters.
    loose = (
        f"privatetoken Challenge = {b64url_encode(CHALLENGE.encode()).rstrip('=')},"
        f'realm="r", MAX-AGE=30, token-key="{b64url_encode(SPKI)}"'
    )
    assert parse_www_authenticate(loose) == [challenge]
    # Several field lines are one list.
    assert parse_www_authenticate([header, header]) == [challenge, challenge]


@pytest.mark.parametrize(
    "header",
    [
        'PrivateToken token-key="AAAA"',  # no challenge parameter
        'PrivateToken challenge="AA=="',  # a one-byte challenge has no token type
        'PrivateToken challenge="AAIA", challenge="AAIA"',  # repeated parameter
        'PrivateToken challenge="AAIA", max-age="soon"',
        'PrivateToken challenge="AAIA", max-age="99999999999"',
        'PrivateToken challenge="AAIA", token-key="not base64!"',
        'PrivateToken challenge="AAIA',  # unterminated quoted string
        'PrivateToken challenge="AAIA" junk',
        "PrivateToken =AAIA",
        "PrivateToken challenge",
    ],
)
def test_www_authenticate_refuses_malformed(header: str) -> None:
    with pytest.raises(DecodeError):
        parse_www_authenticate(header)


def test_header_parsing_is_bounded() -> None:
    with pytest.raises(DecodeError):
        parse_auth_challenges("PrivateToken challenge=" + "A" * 20_000)
    with pytest.raises(DecodeError):
        parse_auth_challenges(", ".join(["Basic"] * 100))
    with pytest.raises(DecodeError):
        parse_auth_challenges("X " + ", ".join(f"p{i}=1" for i in range(100)))


def test_authorization_round_trip_and_refusals() -> None:
    token = _token()
    value = format_authorization(token)
    assert value.startswith('PrivateToken token="')
    assert parse_authorization(value) == token.encode()
    assert parse_authorization(value.replace('"', "") + ", extra=1") == token.encode()
    for bad in (
        "Bearer abc",
        "PrivateToken",
        "PrivateToken other=1",
        f"{value}, PrivateToken token=AAAA",
    ):
        with pytest.raises(DecodeError):
            parse_authorization(bad)


# --- Token keys and issuance messages ----------------------------------------------------------


def test_token_key_encoding_is_the_rfc_spki_and_nothing_else() -> None:
    assert issuance.decode_token_key(SPKI).public_numbers() == (
        ISSUER_KEY.public_key().public_numbers()
    )
    plain = ISSUER_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidKeyError, match="RSASSA-PSS"):
        issuance.decode_token_key(plain)  # rsaEncryption OID: a different key id, refused
    small = rsa.generate_private_key(65537, 1024).public_key()
    with pytest.raises(InvalidKeyError, match="2048"):
        issuance.decode_token_key(issuance.encode_token_key(small))
    with pytest.raises(InvalidKeyError):
        issuance.decode_token_key(SPKI + b"\x00")
    with pytest.raises(InvalidKeyError):
        issuance.decode_token_key(b"\x30\x03\x02\x01\x00")


def test_token_request_refusals() -> None:
    request, _ = issuance.begin(CHALLENGE.encode(), SPKI)
    encoded = request.encode()
    assert len(encoded) == 259
    assert issuance.TokenRequest.decode(encoded) == request
    for bad in (encoded[:-1], encoded + b"\x00", b"\x00\x01" + encoded[2:]):
        with pytest.raises(DecodeError):
            issuance.TokenRequest.decode(bad)


def test_tokens_do_not_verify_under_another_key_or_when_altered() -> None:
    token = _token()
    issuance.verify_token(ISSUER_KEY.public_key(), token)
    other = rsa.generate_private_key(65537, 2048).public_key()
    with pytest.raises(PrivprocError):
        issuance.verify_token(other, token)
    for field, value in (
        ("nonce", bytes(32)),
        ("challenge_digest", bytes(32)),
        ("authenticator", bytes(256)),
    ):
        altered = Token(**{**token.__dict__, field: value})
        with pytest.raises(PrivprocError):
            issuance.verify_token(ISSUER_KEY.public_key(), altered)


def test_finish_refuses_a_response_from_another_key() -> None:
    request, state = issuance.begin(CHALLENGE.encode(), SPKI)
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(PrivprocError):
        state.finish(issuance.sign_request(other, request))
    with pytest.raises(DecodeError):
        state.finish(bytes(255))


# --- Fuzzing: every parser either returns a value or raises a PrivprocError --------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_header_parsers(text: str) -> None:
    for parse in (parse_www_authenticate, parse_authorization, parse_auth_challenges):
        with contextlib.suppress(PrivprocError):
            parse(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_binary_parsers(data: bytes) -> None:
    for parse in (
        TokenChallenge.decode,
        Token.decode,
        issuance.TokenRequest.decode,
        issuance.decode_token_key,
    ):
        with contextlib.suppress(PrivprocError):
            parse(data)
