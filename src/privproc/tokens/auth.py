"""The Privacy Pass HTTP authentication scheme (RFC 9577): challenges, tokens and their headers.

Rules of this module:
- Pure functions and frozen values over bytes and header strings; no I/O, no clock.
- `TokenChallenge` and `Token` are the RFC's default structures; `encode(decode(x)) == x` for every
  accepted input, so a digest of a decoded challenge is the digest of the bytes that were sent.
- Header parsing follows RFC 9110 §11 (`#challenge`, auth-params as token or quoted-string) with
  RFC 9577's rules: unknown parameters and other schemes are ignored, a challenge of a token type
  that is not understood is kept opaque (so greased challenges never break parsing), base64url
  values must be canonical. Inputs are bounded; every failure is a `DecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

from privproc.errors import DecodeError, TooLargeError, TrailingDataError, UsageError
from privproc.wire import Reader

__all__ = [
    "MAX_HEADER_LENGTH",
    "TOKEN_TYPE_BLIND_RSA",
    "AuthChallenge",
    "PrivateTokenChallenge",
    "Token",
    "TokenChallenge",
    "b64url_decode",
    "b64url_encode",
    "format_authorization",
    "format_www_authenticate",
    "parse_auth_challenges",
    "parse_authorization",
    "parse_www_authenticate",
]

TOKEN_TYPE_BLIND_RSA = 0x0002
# Nk and Nid per token type (RFC 9578 §8.2): the sizes of the authenticator and key id.
_TOKEN_SIZES = {0x0001: (48, 32), TOKEN_TYPE_BLIND_RSA: (256, 32)}
_BLIND_RSA_TOKEN_LEN = 2 + 32 + 32 + 32 + 256

MAX_HEADER_LENGTH = 16 * 1024
_MAX_CHALLENGES = 16
_MAX_PARAMS = 16
_SCHEME = "privatetoken"
_SERVER_NAME = re.compile(r"[A-Za-z0-9.\-\[\]:]+")  # host[:port]; no userinfo, no spaces


# --- base64url (RFC 4648 §5) -------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """base64url with padding, as RFC 9577 and RFC 9578 require of senders."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Decode canonical base64url, padded or not; anything else is a `DecodeError`.

    Canonical means re-encoding gives the input back, which rules out foreign characters,
    misplaced or excess padding and non-zero spare bits in one comparison."""
    if len(text) > MAX_HEADER_LENGTH:
        raise TooLargeError(f"the {what} is too long")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DecodeError(f"the {what} is not base64url") from None
    canonical = base64.urlsafe_b64encode(data).decode("ascii")
    if text != canonical and text != canonical.rstrip("="):
        raise DecodeError(f"the {what} is not canonical base64url")
    return data


# --- Structures --------------------------------------------------------------------------------


def _server_name(name: str, what: str) -> str:
    if not name or not _SERVER_NAME.fullmatch(name):
        raise UsageError(f"the {what} is not a server name (host with optional port)")
    return name


@dataclass(frozen=True)
class TokenChallenge:
    """RFC 9577 §2.1.1, the default TokenChallenge structure."""

    token_type: int
    issuer_name: str
    redemption_context: bytes = b""
    origin_info: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.token_type <= 0xFFFF:
            raise UsageError("a token type is a 16-bit integer")
        _server_name(self.issuer_name, "issuer name")
        if len(self.redemption_context) not in (0, 32):
            raise UsageError("a redemption context is empty or 32 bytes")
        for origin in self.origin_info:
            _server_name(origin, "origin name")

    def encode(self) -> bytes:
        issuer = self.issuer_name.encode("ascii")
        origins = ",".join(self.origin_info).encode("ascii")
        if len(issuer) > 0xFFFF or len(origins) > 0xFFFF:
            raise UsageError("issuer name or origin info too long")
        return b"".join(
            (
                self.token_type.to_bytes(2, "big"),
                len(issuer).to_bytes(2, "big"),
                issuer,
                bytes((len(self.redemption_context),)),
                self.redemption_context,
                len(origins).to_bytes(2, "big"),
                origins,
            )
        )

    def digest(self) -> bytes:
        """challenge_digest: SHA-256 of the encoded challenge (RFC 9577 §2.2.1)."""
        return hashlib.sha256(self.encode()).digest()

    def allows_origin(self, origin: str) -> bool:
        """RFC 9577 §2.1.3: an empty list allows any origin; names compare case-insensitively."""
        return not self.origin_info or origin.lower() in (o.lower() for o in self.origin_info)

    @classmethod
    def decode(cls, data: bytes) -> TokenChallenge:
        r = Reader(data)
        token_type = r.uint(2, "token type")
        issuer = r.read(r.uint(2, "issuer name length"), "issuer name")
        context_len = r.uint(1, "redemption context length")
        if context_len not in (0, 32):
            raise DecodeError("a redemption context is empty or 32 bytes")
        context = r.read(context_len, "redemption context")
        origins = r.read(r.uint(2, "origin info length"), "origin info")
        if not r.at_end():
            raise TrailingDataError("bytes follow the token challenge")
        try:
            issuer_name = issuer.decode("ascii")
            origin_text = origins.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("issuer name and origin info are ASCII") from None
        origin_info = tuple(origin_text.split(",")) if origin_text else ()
        try:
            return cls(token_type, issuer_name, context, origin_info)
        except UsageError as exc:
            raise DecodeError(str(exc)) from None


@dataclass(frozen=True)
class Token:
    """RFC 9577 §2.2.1, the default Token structure."""

    token_type: int
    nonce: bytes
    challenge_digest: bytes
    token_key_id: bytes
    authenticator: bytes = field(repr=False)

    def authenticator_input(self) -> bytes:
        """What the authenticator covers (RFC 9577 §2.2.3)."""
        return b"".join(
            (
                self.token_type.to_bytes(2, "big"),
                self.nonce,
                self.challenge_digest,
                self.token_key_id,
            )
        )

    def encode(self) -> bytes:
        return self.authenticator_input() + self.authenticator

    @classmethod
    def decode(cls, data: bytes) -> Token:
        if len(data) == _BLIND_RSA_TOKEN_LEN and data[:2] == b"\x00\x02":
            # The verifier's hot path: a whole type 0x0002 token, sliced without a cursor.
            return cls(TOKEN_TYPE_BLIND_RSA, data[2:34], data[34:66], data[66:98], data[98:])
        r = Reader(data)
        token_type = r.uint(2, "token type")
        sizes = _TOKEN_SIZES.get(token_type)
        if sizes is None:
            raise DecodeError(f"token type 0x{token_type:04x} is not supported")
        nk, nid = sizes
        nonce = r.read(32, "nonce")
        digest = r.read(32, "challenge digest")
        key_id = r.read(nid, "token key id")
        authenticator = r.read(nk, "authenticator")
        if not r.at_end():
            raise TrailingDataError("bytes follow the token")
        return cls(token_type, nonce, digest, key_id, authenticator)


# --- RFC 9110 §11 challenge lists --------------------------------------------------------------

_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*)"')
_OWS = re.compile(r"[ \t]*")
# Lenient on one point: an unquoted value may end in "=" padding (strictly it must then be a
# quoted-string), because deployed Privacy Pass clients send `token=...=` unquoted.
_BARE_VALUE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+=*")
# The shape privproc's own clients send, parsed without the general scanner (the verifier's hot
# path); anything else, however unusual, goes through `parse_auth_challenges`.
_CANONICAL_CREDENTIALS = 'PrivateToken token="'
_BWS_EQUALS = re.compile(r"[ \t]*=[ \t]*")
_SPACES = re.compile(r" +")


@dataclass(frozen=True)
class AuthChallenge:
    """One challenge (or credentials) of an HTTP authentication header: a scheme and its params.

    Parameter names are lower-cased; `token68` is set instead of params for that syntax."""

    scheme: str
    params: dict[str, str]
    token68: str | None = None


class _Scanner:
    """A cursor over one header value for the RFC 9110 §11 grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _match(self, pattern: re.Pattern[str]) -> str | None:
        m = pattern.match(self.text, self.pos)
        if m is None or not m.group():
            return None
        self.pos = m.end()
        return m.group()

    def ows(self) -> None:
        self._match(_OWS)

    def list_separators(self) -> None:
        """Skip OWS and empty list elements (RFC 9110 §5.6.1)."""
        while True:
            self.ows()
            if self.at_end() or self.text[self.pos] != ",":
                return
            self.pos += 1

    def token(self, what: str) -> str:
        name = self._match(_TCHAR)
        if name is None:
            raise DecodeError(f"malformed authentication header: expected {what}")
        return name

    def equals_follows(self) -> bool:
        """Whether BWS "=" comes next; consumes it (and the BWS after it) if so."""
        m = _BWS_EQUALS.match(self.text, self.pos)
        if m is None:
            return False
        self.pos = m.end()
        return True

    def spaces(self) -> bool:
        return self._match(_SPACES) is not None

    def token68(self) -> str | None:
        """token68, but only when it is the whole element (else it is the start of a param)."""
        m = _TOKEN68.match(self.text, self.pos)
        if m is None:
            return None
        rest = _OWS.match(self.text, m.end())
        after = rest.end() if rest else m.end()
        if after < len(self.text) and self.text[after] != ",":
            return None
        self.pos = m.end()
        return m.group()

    def param_value(self) -> str:
        if not self.at_end() and self.text[self.pos] == '"':
            m = _QUOTED.match(self.text, self.pos)
            if m is None:
                raise DecodeError("an unterminated quoted string in an authentication header")
            self.pos = m.end()
            return re.sub(r"\\(.)", r"\1", m.group(1))
        value = self._match(_BARE_VALUE)
        if value is None:
            raise DecodeError("malformed authentication header: expected a parameter value")
        return value

    def element_end(self) -> None:
        self.ows()
        if not self.at_end() and self.text[self.pos] != ",":
            raise DecodeError("malformed authentication header: expected a comma")


def _add_param(challenge: AuthChallenge, name: str, value: str) -> None:
    key = name.lower()
    if key in challenge.params:
        raise DecodeError("an authentication parameter is repeated")
    if len(challenge.params) >= _MAX_PARAMS:
        raise TooLargeError("too many authentication parameters")
    challenge.params[key] = value


def parse_auth_challenges(value: str) -> list[AuthChallenge]:
    """Parse `#challenge` (RFC 9110 §11.6.1), which is also the syntax of one credentials value.

    `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`; commas separate both
    challenges and parameters, so an element is a parameter when `=` follows its name. A
    repeated parameter makes the header malformed (RFC 9110 §11.2)."""
    if len(value) > MAX_HEADER_LENGTH:
        raise TooLargeError("the authentication header is too long")
    out: list[AuthChallenge] = []
    s = _Scanner(value)
    while True:
        s.list_separators()
        if s.at_end():
            return out
        name = s.token("an authentication scheme or parameter")
        if out and out[-1].token68 is None and s.equals_follows():
            _add_param(out[-1], name, s.param_value())
        else:
            if len(out) >= _MAX_CHALLENGES:
                raise TooLargeError("too many authentication challenges")
            out.append(AuthChallenge(name, {}))
            if s.spaces() and not s.at_end() and s.text[s.pos] != ",":
                t68 = s.token68()
                if t68 is not None:
                    out[-1] = AuthChallenge(name, {}, t68)
                else:
                    param = s.token("a parameter name")
                    if not s.equals_follows():
                        raise DecodeError("malformed authentication header: expected =")
                    _add_param(out[-1], param, s.param_value())
        s.element_end()


# --- PrivateToken challenges and credentials ---------------------------------------------------


@dataclass(frozen=True)
class PrivateTokenChallenge:
    """One `PrivateToken` challenge of a WWW-Authenticate header (RFC 9577 §2.1.2).

    `challenge` holds the TokenChallenge bytes exactly as sent; `token_challenge()` decodes them
    for the token types that use the default structure."""

    challenge: bytes
    token_key: bytes | None = None
    max_age: int | None = None

    @property
    def token_type(self) -> int:
        return int.from_bytes(self.challenge[:2], "big")

    def token_challenge(self) -> TokenChallenge:
        return TokenChallenge.decode(self.challenge)

    def header_value(self) -> str:
        parts = [f'PrivateToken challenge="{b64url_encode(self.challenge)}"']
        if self.token_key is not None:
            parts.append(f'token-key="{b64url_encode(self.token_key)}"')
        if self.max_age is not None:
            parts.append(f'max-age="{self.max_age}"')
        return ", ".join(parts)


def parse_www_authenticate(values: list[str] | str) -> list[PrivateTokenChallenge]:
    """Every PrivateToken challenge in one or more WWW-Authenticate field values, in order.

    Other schemes are skipped. A PrivateToken challenge without a decodable `challenge` parameter,
    or with a bad `token-key` or `max-age`, is malformed and refused as a whole header."""
    if isinstance(values, str):
        values = [values]
    out: list[PrivateTokenChallenge] = []
    for value in values:
        for item in parse_auth_challenges(value):
            if item.scheme.lower() != _SCHEME:
                continue
            if "challenge" not in item.params:
                raise DecodeError("a PrivateToken challenge has no challenge parameter")
            challenge = b64url_decode(item.params["challenge"], "challenge")
            if len(challenge) < 2:
                raise DecodeError("a token challenge starts with its 2-byte token type")
            key_text = item.params.get("token-key")
            token_key = None if key_text is None else b64url_decode(key_text, "token-key")
            max_age = None
            if "max-age" in item.params:
                age = item.params["max-age"]
                if not age.isdigit() or len(age) > 10:
                    raise DecodeError("max-age is a number of seconds")
                max_age = int(age)
            out.append(PrivateTokenChallenge(challenge, token_key, max_age))
    return out


def format_www_authenticate(challenges: list[PrivateTokenChallenge]) -> str:
    if not challenges:
        raise UsageError("a WWW-Authenticate header needs at least one challenge")
    return ", ".join(c.header_value() for c in challenges)


def format_authorization(token: Token | bytes) -> str:
    data = token.encode() if isinstance(token, Token) else token
    return f'PrivateToken token="{b64url_encode(data)}"'


def parse_authorization(value: str) -> bytes:
    """The Token bytes of an `Authorization: PrivateToken token=...` value (RFC 9577 §2.2.2)."""
    if value.startswith(_CANONICAL_CREDENTIALS) and value.endswith('"'):
        inner = value[len(_CANONICAL_CREDENTIALS) : -1]
        if '"' not in inner and "\\" not in inner:
            return b64url_decode(inner, "token")
    items = parse_auth_challenges(value)
    if len(items) != 1 or items[0].scheme.lower() != _SCHEME:
        raise DecodeError("the Authorization header does not hold PrivateToken credentials")
    token = items[0].params.get("token")
    if token is None:
        raise DecodeError("the PrivateToken credentials have no token parameter")
    return b64url_decode(token, "token")
