#!/usr/bin/env node
// Reproduce the RFC 9578 Appendix A vectors for token type 0x0002 (Blind RSA
// 2048) with privacypass-ts: for each vector, the published key encoding,
// the TokenChallenge, the client's TokenRequest, the issuer's TokenResponse,
// the finalized Token, and its verification. Prints "vectors ok", or one
// "MISMATCH ..." line per difference (exit 1).
//
// node privacypass-vectors-check.mjs [VECTOR_JSON]
//   default VECTOR_JSON: ../../vectors/privacypass/rfc9578-issuance-vectors.json (relative to this file)
//   (key "token_type_0x0002_blind_rsa_2048": a list of vectors, all fields hex)

import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { publicVerif, TOKEN_TYPES, TokenChallenge } from "@cloudflare/privacypass-ts";

const { BlindRSAMode, Client, Issuer, Origin, TokenRequest, convertRSASSAPSSToEnc, getPublicKeyBytes } = publicVerif;
const BLIND_RSA = TOKEN_TYPES.BLIND_RSA;

const vectorPath = process.argv[2] ??
  fileURLToPath(new URL("../../vectors/privacypass/rfc9578-issuance-vectors.json", import.meta.url));
const vectors = JSON.parse(readFileSync(vectorPath, "utf8")).token_type_0x0002_blind_rsa_2048;
if (!Array.isArray(vectors) || vectors.length === 0) throw new Error(`${vectorPath}: no token_type_0x0002_blind_rsa_2048 vectors`);

const hex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");

const mismatches = [];
function check(name, got, want) {
  if (toHex(got) !== toHex(want)) mismatches.push(`MISMATCH ${name}: got ${toHex(got)} want ${toHex(want)}`);
}

// privacypass-ts has no way to pass in the nonce, the PSS salt or the blind r:
// it draws them from crypto.getRandomValues, in this order (nonce in
// Client.createTokenRequest, then salt and r in blindrsa-ts's blind()). Serve
// the vector's values instead, failing on any other call so a change in that
// order cannot go unnoticed.
async function withFixedRandomness(values, fn) {
  const real = crypto.getRandomValues;
  const queue = [...values];
  crypto.getRandomValues = (array) => {
    const next = queue.shift();
    if (!next || !(array instanceof Uint8Array) || array.byteLength !== next.byteLength) {
      throw new Error(`unexpected getRandomValues(${array?.constructor?.name}[${array?.length}])`);
    }
    array.set(next);
    return array;
  };
  try {
    const result = await fn();
    if (queue.length) throw new Error(`${queue.length} fixed random value(s) left unused`);
    return result;
  } finally {
    crypto.getRandomValues = real;
  }
}

for (const [i, v] of vectors.entries()) {
  const at = (name) => `[${i}] ${name}`;
  const pkS = hex(v.pkS);
  // skS is a PEM; node:crypto turns it into the PKCS#8 DER that WebCrypto takes.
  const skDer = createPrivateKey(Buffer.from(v.skS, "hex").toString("utf8")).export({ format: "der", type: "pkcs8" });
  const privateKey = await crypto.subtle.importKey("pkcs8", skDer, BLIND_RSA.rsaParams, true, ["sign"]);
  const publicKey = await crypto.subtle.importKey("spki", convertRSASSAPSSToEnc(pkS), BLIND_RSA.rsaParams, true, ["verify"]);
  // pkS is the id-RSASSA-PSS SPKI; privacypass-ts must publish the same bytes.
  check(at("pkS (getPublicKeyBytes)"), await getPublicKeyBytes(publicKey), pkS);

  const challenge = TokenChallenge.deserialize(hex(v.token_challenge));
  check(at("token_challenge (re-serialized)"), challenge.serialize(), hex(v.token_challenge));

  const client = new Client(BlindRSAMode.PSS);
  const tokenRequest = await withFixedRandomness(
    [hex(v.nonce), hex(v.salt), hex(v.blind)],
    () => client.createTokenRequest(challenge, pkS),
  );
  check(at("token_request"), tokenRequest.serialize(), hex(v.token_request));

  const issuer = new Issuer(BlindRSAMode.PSS, challenge.issuerName, privateKey, publicKey);
  const tokenResponse = await issuer.issue(TokenRequest.deserialize(BLIND_RSA, hex(v.token_request)));
  check(at("token_response"), tokenResponse.serialize(), hex(v.token_response));

  const token = await client.finalize(client.deserializeTokenResponse(hex(v.token_response)));
  check(at("token"), token.serialize(), hex(v.token));
  if (!(await new Origin(BlindRSAMode.PSS).verify(token, publicKey))) mismatches.push(`MISMATCH ${at("token")}: does not verify`);
}

if (mismatches.length) {
  process.stdout.write(mismatches.join("\n") + "\n");
  process.exitCode = 1;
} else {
  process.stdout.write("vectors ok\n");
}
