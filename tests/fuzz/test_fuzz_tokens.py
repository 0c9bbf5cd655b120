"""Fuzzing Privacy Pass (tokens/auth.py, tokens/issuance.py, tokens/directory.py): mutated
challenges, tokens, token requests and responses, token keys, WWW-Authenticate and Authorization
values, issuer directories and key sets. Each parser returns a value or raises a PrivprocError;
whatever it accepts re-encodes to the same bytes (or the same value)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from privproc.tokens import issuance
from privproc.tokens.auth import (
    Token,
    TokenChallenge,
    b64url_decode,
    b64url_encode,
    format_authorization,
    format_www_authenticate,
    parse_auth_challenges,
    parse_authorization,
    parse_www_authenticate,
)
from privproc.tokens.directory import (
    DirectoryKey,
    IssuerDirectory,
    KeySet,
    VerificationKey,
)
from tests.conftest import load_vectors
from tests.fuzz.support import fuzz, mutated, mutated_text, parses

_ISSUANCE = load_vectors("privacypass/rfc9578-issuance-vectors.json")[
    "token_type_0x0002_blind_rsa_2048"
]
_HEADERS = load_vectors("privacypass/rfc9577-header-vectors.json")["vectors"]

CHALLENGES = [bytes.fromhex(v["token_challenge"]) for v in _ISSUANCE]
TOKENS = [bytes.fromhex(v["token"]) for v in _ISSUANCE]
REQUESTS = [bytes.fromhex(v["token_request"]) for v in _ISSUANCE]
TOKEN_KEYS = [bytes.fromhex(v["pkS"]) for v in _ISSUANCE]
WWW_AUTHENTICATE = [v["header"] for v in _HEADERS]
AUTHORIZATION = [format_authorization(t) for t in TOKENS]

DIRECTORY = IssuerDirectory(
    "https://issuer.example/token-request",
    (DirectoryKey(TOKEN_KEYS[0]), DirectoryKey(TOKEN_KEYS[-1], not_before=1_700_000_000)),
).encode()
KEY_SET = KeySet(
    "issuer.example",
    (VerificationKey(TOKEN_KEYS[0], 1_700_000_000, 1_800_000_000),),
).encode()

# Characters that matter to the RFC 9110 challenge grammar, to reach past its first checks.
_HEADER_ALPHABET = st.sampled_from(list(' \t,="\\=/+-_.~!#$%&*^`|') + list("aAzZ09PrivateTokn"))


@fuzz()
@given(mutated(st.sampled_from(CHALLENGES)))
def test_token_challenge(data: bytes) -> None:
    challenge = parses(TokenChallenge.decode, data)
    if challenge is not None:
        assert challenge.encode() == data


@fuzz()
@given(st.one_of(mutated(st.sampled_from(TOKENS)), st.binary(max_size=400)))
def test_token(data: bytes) -> None:
    token = parses(Token.decode, data)
    if token is not None:
        assert token.encode() == data


@fuzz()
@given(st.one_of(mutated(st.sampled_from(REQUESTS)), st.binary(max_size=300)))
def test_token_request_and_response(data: bytes) -> None:
    request = parses(issuance.TokenRequest.decode, data)
    if request is not None:
        assert request.encode() == data
    response = parses(issuance.decode_token_response, data)
    if response is not None:
        assert response == data


@fuzz(0.5)
@given(mutated(st.sampled_from(TOKEN_KEYS)))
def test_token_key(data: bytes) -> None:
    key = parses(issuance.decode_token_key, data)
    if key is not None:
        assert issuance.encode_token_key(key) == data


@fuzz()
@given(st.one_of(mutated_text(st.sampled_from(WWW_AUTHENTICATE)), st.text(_HEADER_ALPHABET)))
def test_www_authenticate(value: str) -> None:
    challenges = parses(parse_www_authenticate, value)
    parses(parse_auth_challenges, value)
    if challenges:  # what was accepted is formatted into a header that parses to the same
        assert parse_www_authenticate(format_www_authenticate(challenges)) == challenges


@fuzz()
@given(st.one_of(mutated_text(st.sampled_from(AUTHORIZATION)), st.text(_HEADER_ALPHABET)))
def test_authorization(value: str) -> None:
    token = parses(parse_authorization, value)
    if token is not None:
        assert parse_authorization(format_authorization(token)) == token


@fuzz()
@given(st.text(max_size=200))
def test_b64url(text: str) -> None:
    data = parses(lambda t: b64url_decode(t, "value"), text)
    if data is not None:
        assert b64url_encode(data).rstrip("=") == text.rstrip("=")


# --- JSON documents ----------------------------------------------------------------------------

_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@st.composite
def _edited_documents(draw: st.DrawFn, base: bytes) -> bytes:
    """The document with one JSON value somewhere replaced by an arbitrary one."""
    doc = json.loads(base)
    node: Any = doc
    path = draw(st.lists(st.integers(0, 5), max_size=3))
    for step in path:
        children = list(node) if isinstance(node, dict) else node
        if not isinstance(children, list) or not children:
            break
        key = children[step % len(children)] if isinstance(node, dict) else step % len(children)
        child = node[key]
        if not isinstance(child, dict | list):
            node[key] = draw(_JSON)
            break
        node = child
    else:
        if isinstance(node, dict):
            node[draw(st.sampled_from([*node, "extra"]))] = draw(_JSON)
    return json.dumps(doc).encode()


def _documents(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(base), _edited_documents(base), _JSON.map(lambda v: json.dumps(v).encode())
    )


@fuzz(0.5)
@given(_documents(DIRECTORY))
def test_issuer_directory(data: bytes) -> None:
    directory = parses(IssuerDirectory.decode, data)
    if directory is not None:
        assert IssuerDirectory.decode(directory.encode()) == directory


@fuzz(0.5)
@given(_documents(KEY_SET))
def test_key_set(data: bytes) -> None:
    key_set = parses(KeySet.decode, data)
    if key_set is not None:
        assert KeySet.decode(key_set.encode()) == key_set


# --- Regressions found by these tests (fixed; kept so that they stay fixed) -------------------


def test_regression_deeply_nested_json_documents() -> None:
    # Fixed (fuzz, issue 8): json.loads raises RecursionError, not a ValueError, on deep nesting;
    # tokens/directory.py `_load` lets it escape. 5000 bytes is far below MAX_DOCUMENT (64 KiB).
    for parse in (IssuerDirectory.decode, KeySet.decode):
        assert parses(parse, b"[" * 5000) is None


def test_regression_token_key_with_unknown_algorithm_oid() -> None:
    # Fixed (fuzz, issue 8): tokens/issuance.py `decode_token_key` catches ValueError and TypeError
    # only; `load_der_public_key` raises cryptography.exceptions.UnsupportedAlgorithm for an SPKI
    # whose algorithm OID it does not know. One zeroed byte of the RFC 9578 vector key is enough.
    # Also reaches IssuerDirectory/KeySet.decode and tlog decode_entry (IssuerTokenKey).
    data = bytearray(TOKEN_KEYS[0])
    data[8] = 0
    assert parses(issuance.decode_token_key, bytes(data)) is None
