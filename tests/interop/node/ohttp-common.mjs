// Shared pieces of the independent Oblivious HTTP (RFC 9458) peer.
// Written from RFC 9458 sections 3 and 4; HPKE comes from hpke-js,
// Extract/Expand of section 4.4 and AES-128-GCM from WebCrypto.

import { AeadId, CipherSuite, KdfId, KemId } from "hpke-js";

export const KEM_X25519_SHA256 = 0x0020;
export const KDF_HKDF_SHA256 = 0x0001;
export const AEAD_AES_128_GCM = 0x0001;

// Sizes for the one suite this peer speaks (RFC 9180 section 7).
export const NPK = 32; // X25519 public key
export const NENC = 32; // X25519 encapsulated key
export const NK = 16; // AES-128-GCM key
export const NN = 12; // AES-128-GCM nonce

export const REQUEST_LABEL = "message/bhttp request";
export const RESPONSE_LABEL = "message/bhttp response";

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();

export function newSuite() {
  return new CipherSuite({
    kem: KemId.DhkemX25519HkdfSha256,
    kdf: KdfId.HkdfSha256,
    aead: AeadId.Aes128Gcm,
  });
}

export function toHex(bytes) {
  return Buffer.from(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes)
    .toString("hex");
}

export function fromHex(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error(`invalid hex string: ${JSON.stringify(hex)}`);
  }
  return new Uint8Array(Buffer.from(hex, "hex"));
}

export function concat(...parts) {
  const arrays = parts.map((p) => (p instanceof ArrayBuffer ? new Uint8Array(p) : p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.byteLength;
  }
  return out;
}

export function equalBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function u16(n) {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

function readU16(buf, off) {
  if (off + 2 > buf.byteLength) throw new Error("truncated: expected 2-byte integer");
  return (buf[off] << 8) | buf[off + 1];
}

// ---------------------------------------------------------------------------
// Key configuration (RFC 9458 section 3.1) and application/ohttp-keys (3.2)
// ---------------------------------------------------------------------------

// Serialize one Key Config. publicKey must already have the KEM's Npk length.
export function encodeKeyConfig({ keyId, kemId, publicKey, suites }) {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > 255) throw new Error("bad key id");
  if (!suites.length) throw new Error("a key config needs at least one symmetric suite");
  const sym = concat(...suites.map(([kdf, aead]) => concat(u16(kdf), u16(aead))));
  return concat(new Uint8Array([keyId]), u16(kemId), publicKey, u16(sym.byteLength), sym);
}

// application/ohttp-keys: each config prefixed with its 2-byte length.
export function encodeKeysList(configs) {
  return concat(...configs.map((c) => concat(u16(c.byteLength), c)));
}

// Split an application/ohttp-keys body into the raw config byte strings.
export function splitKeysList(body) {
  const out = [];
  let off = 0;
  while (off < body.byteLength) {
    const len = readU16(body, off);
    off += 2;
    if (len === 0) throw new Error("zero-length key config in application/ohttp-keys");
    if (off + len > body.byteLength) throw new Error("truncated key config in application/ohttp-keys");
    out.push(body.subarray(off, off + len));
    off += len;
  }
  return out;
}

// Parse one Key Config. Configs whose KEM is unknown cannot be parsed past
// the KEM id (Npk unknown); they come back with known: false.
export function parseKeyConfig(cfg) {
  if (cfg.byteLength < 3) throw new Error("key config too short");
  const keyId = cfg[0];
  const kemId = readU16(cfg, 1);
  if (kemId !== KEM_X25519_SHA256) return { keyId, kemId, known: false };
  let off = 3;
  if (off + NPK > cfg.byteLength) throw new Error("key config: truncated public key");
  const publicKey = cfg.slice(off, off + NPK);
  off += NPK;
  const symLen = readU16(cfg, off);
  off += 2;
  if (symLen < 4 || symLen % 4 !== 0) throw new Error(`key config: bad symmetric algorithms length ${symLen}`);
  if (off + symLen !== cfg.byteLength) throw new Error("key config: length mismatch");
  const suites = [];
  for (let end = off + symLen; off < end; off += 4) {
    suites.push([readU16(cfg, off), readU16(cfg, off + 2)]);
  }
  return { keyId, kemId, known: true, publicKey, suites };
}

// First config offering X25519 / HKDF-SHA256 / AES-128-GCM, or null.
export function selectConfig(keysBody) {
  for (const raw of splitKeysList(keysBody)) {
    let cfg;
    try {
      cfg = parseKeyConfig(raw);
    } catch {
      continue; // malformed config for a known KEM: skip it, try the next
    }
    if (!cfg.known) continue;
    if (cfg.suites.some(([kdf, aead]) => kdf === KDF_HKDF_SHA256 && aead === AEAD_AES_128_GCM)) {
      return { keyId: cfg.keyId, kemId: cfg.kemId, kdfId: KDF_HKDF_SHA256, aeadId: AEAD_AES_128_GCM, publicKey: cfg.publicKey };
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// Request encapsulation (RFC 9458 sections 4.1, 4.3)
// ---------------------------------------------------------------------------

export function requestHeader(keyId, kemId, kdfId, aeadId) {
  return concat(new Uint8Array([keyId]), u16(kemId), u16(kdfId), u16(aeadId));
}

export function requestInfo(hdr) {
  return concat(te.encode(REQUEST_LABEL), new Uint8Array([0]), hdr);
}

// Returns { encRequest, hdr, enc, ctx } where ctx is the HPKE sender context.
// ekm (testing only) is passed through to hpke-js to fix the ephemeral key.
export async function encapsulateRequest(suite, config, request, ekm) {
  const hdr = requestHeader(config.keyId, config.kemId, config.kdfId, config.aeadId);
  const recipientPublicKey = await suite.kem.deserializePublicKey(config.publicKey);
  const params = { recipientPublicKey, info: requestInfo(hdr) };
  if (ekm !== undefined) params.ekm = ekm;
  const ctx = await suite.createSenderContext(params);
  const enc = new Uint8Array(ctx.enc);
  const ct = new Uint8Array(await ctx.seal(request, new Uint8Array(0)));
  return { encRequest: concat(hdr, enc, ct), hdr, enc, ctx };
}

// Gateway side. keys: Map keyId -> { privateKey (CryptoKey or CryptoKeyPair) }.
// Throws on any problem; returns { request, enc, ctx }.
export async function decapsulateRequest(suite, keys, encRequest) {
  if (encRequest.byteLength < 7 + NENC) throw new Error("encapsulated request too short");
  const hdr = encRequest.subarray(0, 7);
  const keyId = hdr[0];
  const kemId = readU16(hdr, 1);
  const kdfId = readU16(hdr, 3);
  const aeadId = readU16(hdr, 5);
  const key = keys.get(keyId);
  if (!key) throw new Error(`unknown key id ${keyId}`);
  if (kemId !== KEM_X25519_SHA256 || kdfId !== KDF_HKDF_SHA256 || aeadId !== AEAD_AES_128_GCM) {
    throw new Error("unsupported algorithms in request header");
  }
  const enc = encRequest.slice(7, 7 + NENC);
  const ct = encRequest.subarray(7 + NENC);
  const ctx = await suite.createRecipientContext({
    recipientKey: key.privateKey,
    enc,
    info: requestInfo(hdr),
  });
  const request = new Uint8Array(await ctx.open(ct, new Uint8Array(0)));
  return { request, enc, ctx };
}

// ---------------------------------------------------------------------------
// Response encapsulation (RFC 9458 section 4.4)
// ---------------------------------------------------------------------------

// HKDF-SHA256 Extract / Expand (RFC 5869) over WebCrypto HMAC, independent of
// the HPKE library's KDF object. (The OHTTP salt is enc || response_nonce, 48
// bytes: @hpke/core's HkdfSha256.extract() rejects any salt that is not
// exactly Nh = 32 bytes; hpke-js's suite.kdf, from @hpke/dhkem-x25519, falls
// back to a pure-JS HMAC for such salts and gives the right answer.)
export async function hkdfExtract(salt, ikm) {
  const k = await subtle.importKey("raw", salt, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, ikm));
}

export async function hkdfExpand(prk, info, length) {
  const k = await subtle.importKey("raw", prk, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const out = new Uint8Array(length);
  let t = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++) {
    t = new Uint8Array(await subtle.sign("HMAC", k, concat(t, info, new Uint8Array([i]))));
    out.set(t.subarray(0, Math.min(t.byteLength, length - off)), off);
    off += t.byteLength;
  }
  return out;
}

export const RESPONSE_NONCE_LEN = Math.max(NN, NK);

// secret = context.Export("message/bhttp response", max(Nn, Nk))
export async function responseSecret(ctx) {
  return new Uint8Array(await ctx.export(te.encode(RESPONSE_LABEL), Math.max(NN, NK)));
}

export async function responseKeys(secret, enc, responseNonce) {
  const salt = concat(enc, responseNonce);
  const prk = await hkdfExtract(salt, secret);
  const aeadKey = await hkdfExpand(prk, te.encode("key"), NK);
  const aeadNonce = await hkdfExpand(prk, te.encode("nonce"), NN);
  return { salt, prk, aeadKey, aeadNonce };
}

async function aesKey(raw, usage) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, [usage]);
}

// Gateway: enc_response = response_nonce || Seal(aead_key, aead_nonce, "", response)
export async function encapsulateResponse(ctx, enc, response, fixedNonce) {
  const secret = await responseSecret(ctx);
  const responseNonce = fixedNonce ?? globalThis.crypto.getRandomValues(new Uint8Array(RESPONSE_NONCE_LEN));
  const { aeadKey, aeadNonce } = await responseKeys(secret, enc, responseNonce);
  const ct = await subtle.encrypt(
    { name: "AES-GCM", iv: aeadNonce, additionalData: new Uint8Array(0), tagLength: 128 },
    await aesKey(aeadKey, "encrypt"),
    response,
  );
  return concat(responseNonce, new Uint8Array(ct));
}

// Client: reverse of the above with the sender context.
export async function decapsulateResponse(ctx, enc, encResponse) {
  if (encResponse.byteLength < RESPONSE_NONCE_LEN + 16) throw new Error("encapsulated response too short");
  const responseNonce = encResponse.subarray(0, RESPONSE_NONCE_LEN);
  const ct = encResponse.subarray(RESPONSE_NONCE_LEN);
  const secret = await responseSecret(ctx);
  const { aeadKey, aeadNonce } = await responseKeys(secret, enc, responseNonce);
  const pt = await subtle.decrypt(
    { name: "AES-GCM", iv: aeadNonce, additionalData: new Uint8Array(0), tagLength: 128 },
    await aesKey(aeadKey, "decrypt"),
    ct,
  );
  return new Uint8Array(pt);
}
