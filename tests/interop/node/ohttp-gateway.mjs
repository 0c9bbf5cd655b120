#!/usr/bin/env node
// Independent Oblivious HTTP (RFC 9458) echo gateway for interop tests.
//
// node ohttp-gateway.mjs --port PORT      (binds 127.0.0.1; PORT 0 = any free port)
//
// GET  /.well-known/ohttp-gateway -> application/ohttp-keys with two configs:
//        key id 2, unknown KEM 0x9999 (32 random bytes as "public key"), listed first
//        key id 1, DHKEM(X25519,HKDF-SHA256) + HKDF-SHA256/AES-128-GCM, fresh key pair
// POST /gateway-echo (message/ohttp-req) -> message/ohttp-res whose plaintext is
//        exactly the decapsulated request bytes. Any decapsulation error -> 400, empty body.
// Prints "listening PORT" on stdout once ready.

import http from "node:http";
import { parseArgs } from "node:util";
import {
  AEAD_AES_128_GCM,
  decapsulateRequest,
  encapsulateResponse,
  encodeKeyConfig,
  encodeKeysList,
  KDF_HKDF_SHA256,
  KEM_X25519_SHA256,
  newSuite,
} from "./ohttp-common.mjs";

const MAX_BODY = 1 << 20;

function fail(msg) {
  process.stderr.write(`ohttp-gateway: ${msg}\n`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({ options: { port: { type: "string" } }, strict: true }));
} catch (e) {
  fail(`${e.message}\nusage: node ohttp-gateway.mjs --port PORT`);
}
const port = Number(args.port);
if (args.port === undefined || !Number.isInteger(port) || port < 0 || port > 65535) fail("--port PORT is required");

const suite = newSuite();
const keyPair = await suite.kem.generateKeyPair();
const publicKey = new Uint8Array(await suite.kem.serializePublicKey(keyPair.publicKey));
const keys = new Map([[1, { privateKey: keyPair }]]);

const keysList = encodeKeysList([
  encodeKeyConfig({
    keyId: 2,
    kemId: 0x9999,
    publicKey: globalThis.crypto.getRandomValues(new Uint8Array(32)),
    suites: [[KDF_HKDF_SHA256, AEAD_AES_128_GCM]],
  }),
  encodeKeyConfig({
    keyId: 1,
    kemId: KEM_X25519_SHA256,
    publicKey,
    suites: [[KDF_HKDF_SHA256, AEAD_AES_128_GCM]],
  }),
]);

function send(res, status, contentType, body) {
  const headers = { "cache-control": "no-store" };
  if (contentType) headers["content-type"] = contentType;
  headers["content-length"] = body ? body.byteLength : 0;
  res.writeHead(status, headers);
  res.end(body ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : undefined);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on("data", (c) => {
      n += c.length;
      if (n > MAX_BODY) {
        reject(new Error("body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    req.on("error", reject);
  });
}

async function handle(req, res) {
  const path = new URL(req.url, "http://127.0.0.1").pathname;
  if (path === "/.well-known/ohttp-gateway") {
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, null, null);
    return send(res, 200, "application/ohttp-keys", keysList);
  }
  if (path === "/gateway-echo") {
    if (req.method !== "POST") return send(res, 405, null, null);
    const ct = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
    if (ct !== "message/ohttp-req") return send(res, 415, null, null);
    let body;
    try {
      body = await readBody(req);
    } catch {
      return send(res, 413, null, null);
    }
    let decap;
    try {
      decap = await decapsulateRequest(suite, keys, body);
    } catch {
      return send(res, 400, null, null);
    }
    const encResponse = await encapsulateResponse(decap.ctx, decap.enc, decap.request);
    return send(res, 200, "message/ohttp-res", encResponse);
  }
  return send(res, 404, null, null);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    process.stderr.write(`ohttp-gateway: internal error: ${e?.stack ?? e}\n`);
    if (!res.headersSent) send(res, 500, null, null);
    else res.destroy();
  });
});
server.on("error", (e) => fail(e.message));
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
