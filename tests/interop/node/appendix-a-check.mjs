#!/usr/bin/env node
// Reproduce RFC 9458 Appendix A with hpke-js + the helpers used by the
// client/gateway. Prints OK, or one "MISMATCH ..." line per differing value
// (exit code 1).
//
// node appendix-a-check.mjs [VECTOR_JSON]
//   default VECTOR_JSON: ../../vectors/ohttp/rfc9458-appendix-a.json (relative to this file)

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  AEAD_AES_128_GCM,
  decapsulateRequest,
  decapsulateResponse,
  encapsulateRequest,
  encapsulateResponse,
  equalBytes,
  fromHex,
  KDF_HKDF_SHA256,
  newSuite,
  parseKeyConfig,
  requestHeader,
  requestInfo,
  responseKeys,
  responseSecret,
  toHex,
} from "./ohttp-common.mjs";

const vectorPath = process.argv[2] ??
  fileURLToPath(new URL("../../vectors/ohttp/rfc9458-appendix-a.json", import.meta.url));
const v = JSON.parse(readFileSync(vectorPath, "utf8"));
const h = (k) => fromHex(v[k]);

const mismatches = [];
function check(name, got, want) {
  if (!equalBytes(got, want)) mismatches.push(`MISMATCH ${name}: got ${toHex(got)} want ${toHex(want)}`);
}

const suite = newSuite();

// Key config (a single config here, not an application/ohttp-keys list).
const cfg = parseKeyConfig(h("key_config"));
if (!cfg.known) throw new Error("vector key config has an unexpected KEM");
if (!cfg.suites.some(([kdf, aead]) => kdf === KDF_HKDF_SHA256 && aead === AEAD_AES_128_GCM)) {
  throw new Error("vector key config does not offer HKDF-SHA256/AES-128-GCM");
}
const config = { keyId: cfg.keyId, kemId: cfg.kemId, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM, publicKey: cfg.publicKey };
check("hpke_info", requestInfo(requestHeader(config.keyId, config.kemId, config.kdfId, config.aeadId)), h("hpke_info"));

// Deterministic ephemeral key: hpke-js takes `ekm` in createSenderContext.
// Bytes there are run through DeriveKeyPair (they are IKM, not skE), so pass
// a CryptoKeyPair built from the raw skE/pkE instead.
const ekm = {
  privateKey: await suite.kem.deserializePrivateKey(h("client_ephemeral_sk")),
  publicKey: await suite.kem.deserializePublicKey(h("client_ephemeral_pk")),
};
const sender = await encapsulateRequest(suite, config, h("request_bhttp"), ekm);
check("enc (client_ephemeral_pk)", sender.enc, h("client_ephemeral_pk"));
check("encapsulated_request", sender.encRequest, h("encapsulated_request"));
check("response_export_secret (client side)", await responseSecret(sender.ctx), h("response_export_secret"));

// Gateway side: decapsulate the vector's request with server_sk; the key
// config's public key must be the one belonging to server_sk.
const serverSk = await suite.kem.deserializePrivateKey(h("server_sk"));
const serverPair = { privateKey: serverSk, publicKey: await suite.kem.deserializePublicKey(cfg.publicKey) };
const keys = new Map([[cfg.keyId, { privateKey: serverSk }]]);
const gw = await decapsulateRequest(suite, keys, h("encapsulated_request"));
check("decapsulated request", gw.request, h("request_bhttp"));
const keysPair = new Map([[cfg.keyId, { privateKey: serverPair }]]);
check("decapsulated request (key pair)", (await decapsulateRequest(suite, keysPair, h("encapsulated_request"))).request, h("request_bhttp"));

// Response intermediate values, then the encapsulated response both ways.
const secret = await responseSecret(gw.ctx);
check("response_export_secret", secret, h("response_export_secret"));
const rk = await responseKeys(secret, gw.enc, h("response_nonce"));
check("response_salt", rk.salt, h("response_salt"));
check("response_prk", rk.prk, h("response_prk"));
check("response_aead_key", rk.aeadKey, h("response_aead_key"));
check("response_aead_nonce", rk.aeadNonce, h("response_aead_nonce"));
check("encapsulated_response (gateway seal)", await encapsulateResponse(gw.ctx, gw.enc, h("response_bhttp"), h("response_nonce")), h("encapsulated_response"));
try {
  check("response_bhttp (client open)", await decapsulateResponse(sender.ctx, sender.enc, h("encapsulated_response")), h("response_bhttp"));
} catch (e) {
  mismatches.push(`MISMATCH response_bhttp (client open): decryption failed: ${e.message || e.name}`);
}

if (mismatches.length) {
  for (const m of mismatches) process.stdout.write(m + "\n");
  process.exit(1);
}
process.stdout.write("OK\n");
