"""RFC 9458 Appendix A, byte for byte, with the vector's ephemeral values injected."""

from __future__ import annotations

from privproc import hpke
from privproc.ohttp import bhttp
from privproc.ohttp.keys import GatewayKey, KeyConfig, KeyRing, decode_key_configs
from privproc.ohttp.messages import decapsulate_request, encapsulate_request
from tests.conftest import load_vectors

V = {
    k: bytes.fromhex(v)
    for k, v in load_vectors("ohttp/rfc9458-appendix-a.json").items()
    if k not in ("description", "source", "verified")
}


def _gateway() -> tuple[KeyConfig, KeyRing]:
    config = KeyConfig.decode(V["key_config"])
    sk = config.kem.deserialize_private_key(V["server_sk"])
    return config, KeyRing([GatewayKey(config, sk)])


def test_key_config_decodes_and_reencodes() -> None:
    config, _ = _gateway()
    assert config.key_id == 1
    assert config.kem is hpke.KEM_X25519_HKDF_SHA256
    assert [(s.kdf.id, s.aead.id) for s in config.suites] == [(1, 1), (1, 3)]
    assert config.encode() == V["key_config"]
    # The same configuration inside an application/ohttp-keys document.
    doc = len(V["key_config"]).to_bytes(2, "big") + V["key_config"]
    assert decode_key_configs(doc) == [config]


def test_request_is_reproduced_byte_for_byte() -> None:
    config, ring = _gateway()
    sk_e = config.kem.deserialize_private_key(V["client_ephemeral_sk"])
    assert sk_e.public_key.to_bytes() == V["client_ephemeral_pk"]
    request = bhttp.encode_request(bhttp.decode_request(V["request_bhttp"]))
    assert request == V["request_bhttp"]
    encapsulated, client = encapsulate_request(config, request, sk_e=sk_e)
    assert encapsulated == V["encapsulated_request"]

    # The gateway side recovers the request and reproduces the response byte for byte.
    inner, server = decapsulate_request(ring, V["encapsulated_request"])
    assert inner == V["request_bhttp"]
    assert bhttp.decode_request(inner).authority == "example.com"
    response = server.encapsulate_response(V["response_bhttp"], response_nonce=V["response_nonce"])
    assert response == V["encapsulated_response"]
    assert client.decapsulate_response(V["encapsulated_response"]) == V["response_bhttp"]
    assert bhttp.decode_response(V["response_bhttp"]).status == 200


def test_intermediate_response_values() -> None:
    _config, ring = _gateway()
    _, server = decapsulate_request(ring, V["encapsulated_request"])
    ctx = server._context
    assert ctx.export(b"message/bhttp response", 16) == V["response_export_secret"]
    enc = V["encapsulated_request"][7:39]
    assert enc + V["response_nonce"] == V["response_salt"]
    kdf = ctx.suite.kdf
    prk = kdf.extract(V["response_salt"], V["response_export_secret"])
    assert prk == V["response_prk"]
    assert kdf.expand(prk, b"key", 16) == V["response_aead_key"]
    assert kdf.expand(prk, b"nonce", 12) == V["response_aead_nonce"]
