#!/usr/bin/env node
// Self-test of privacypass-client.mjs against a throwaway issuer built on
// privacypass-ts's own type-2 Issuer, on 127.0.0.1 (any free port).
//
// node privacypass-selftest.mjs
//
// Checks: a token is issued for a quoted challenge (with an unknown extra
// parameter) and for privacypass-ts's own unquoted serialisation, and it
// verifies under the issuer's public key; a wrong secret exits 2 with the
// status on stderr and without the secret; a 429 reports its Retry-After;
// a challenge whose token-key the directory does not list exits 1.
// Prints "selftest ok" (exit 0), or "selftest FAILED: ..." (exit 1).

import { spawn } from "node:child_process";
import http from "node:http";
import { fileURLToPath } from "node:url";
import {
  AuthorizationHeader,
  MediaType,
  PRIVATE_TOKEN_ISSUER_DIRECTORY,
  publicVerif,
  TOKEN_TYPES,
  WWWAuthenticateHeader,
} from "@cloudflare/privacypass-ts";

const { BlindRSAMode, Issuer, Origin, TokenRequest, getPublicKeyBytes, convertRSASSAPSSToEnc } = publicVerif;
const BLIND_RSA = TOKEN_TYPES.BLIND_RSA;
const SECRET = "selftest-secret-9f2c";
const RATE_LIMITED_SECRET = "selftest-rate-limited";
const RETRY_AFTER = "123";
const CLIENT = fileURLToPath(new URL("./privacypass-client.mjs", import.meta.url));

function check(ok, what) {
  if (!ok) throw new Error(what);
}

function equalBytes(a, b) {
  return a.byteLength === b.byteLength && Buffer.from(a).equals(Buffer.from(b));
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// --- Issuer --------------------------------------------------------------

// Issuer.generateKey is crypto.subtle.generateKey for RSA-PSS/SHA-384, extractable.
const { privateKey, publicKey } = await Issuer.generateKey(BlindRSAMode.PSS, {
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
});
// The published form: SPKI with the id-RSASSA-PSS OID (RFC 9578 section 6.5).
const tokenKey = await getPublicKeyBytes(publicKey);
const tokenKeyId = await sha256(tokenKey);

function send(res, status, headers, body) {
  res.writeHead(status, { "content-length": body ? body.byteLength : 0, ...headers });
  res.end(body ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : undefined);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    req.on("error", reject);
  });
}

let issuer; // needs the port for its name, so it is made once listening

async function handle(req, res) {
  if (req.method === "GET" && req.url === PRIVATE_TOKEN_ISSUER_DIRECTORY) {
    const directory = {
      // Relative, to exercise resolution against the directory URL.
      "issuer-request-uri": "/token-request",
      "token-keys": [
        // A key of another type that the client must skip.
        { "token-type": TOKEN_TYPES.VOPRF.value, "token-key": Buffer.from(crypto.getRandomValues(new Uint8Array(49))).toString("base64url") },
        // Unpadded on purpose: the client compares decoded bytes.
        { "token-type": BLIND_RSA.value, "token-key": Buffer.from(tokenKey).toString("base64url"), "not-before": Math.floor(Date.now() / 1000) - 60 },
      ],
    };
    send(res, 200, { "content-type": MediaType.PRIVATE_TOKEN_ISSUER_DIRECTORY }, new TextEncoder().encode(JSON.stringify(directory)));
    return;
  }
  if (req.url !== "/token-request") return send(res, 404);
  if (req.method !== "POST") return send(res, 405);
  const auth = req.headers.authorization;
  if (auth === `Bearer ${RATE_LIMITED_SECRET}`) return send(res, 429, { "retry-after": RETRY_AFTER });
  if (auth !== `Bearer ${SECRET}`) return send(res, 401);
  if (req.headers["content-type"] !== MediaType.PRIVATE_TOKEN_REQUEST) return send(res, 415);
  const body = await readBody(req);
  // TokenRequest.deserialize ignores trailing bytes, so check the exact size.
  if (body.byteLength !== 3 + BLIND_RSA.Nk) return send(res, 400);
  const tokenRequest = TokenRequest.deserialize(BLIND_RSA, body);
  if (tokenRequest.truncatedTokenKeyId !== tokenKeyId[tokenKeyId.length - 1]) return send(res, 400);
  const tokenResponse = await issuer.issue(tokenRequest);
  send(res, 200, { "content-type": MediaType.PRIVATE_TOKEN_RESPONSE }, tokenResponse.serialize());
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    process.stderr.write(`selftest issuer: ${e.stack}\n`);
    if (!res.headersSent) send(res, 500);
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const { port } = server.address();
const baseUrl = `http://127.0.0.1:${port}`;
const issuerName = `127.0.0.1:${port}`;
issuer = new Issuer(BlindRSAMode.PSS, issuerName, privateKey, publicKey);
check(equalBytes(await issuer.tokenKeyID(), tokenKeyId), "Issuer.tokenKeyID() is not SHA-256 of the published token key");

// --- Client runs ---------------------------------------------------------

function runClient(secret, challenge) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLIENT, "--issuer", baseUrl, "--secret", secret, "--challenge", challenge], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

// Checks one successful run's output and returns the token.
async function checkIssued(run, challenge) {
  check(run.code === 0, `client exited ${run.code}: ${run.stderr.trim()}`);
  const lines = run.stdout.split("\n").filter(Boolean);
  check(lines.length === 1, `client printed ${lines.length} lines, want 1`);
  const out = JSON.parse(lines[0]);
  check(/^[A-Za-z0-9_-]+=*$/.test(out.token) && out.token.length % 4 === 0, `"token" is not padded base64url: ${out.token}`);
  check(out.authorization === `PrivateToken token=${out.token}`, `unexpected authorization: ${out.authorization}`);

  const parsed = AuthorizationHeader.parse(BLIND_RSA, out.authorization);
  check(parsed.length === 1, "privacypass-ts does not parse the authorization value");
  const token = parsed[0].token;
  // A fresh copy: Token.deserialize reads bytes.buffer from offset 0.
  check(equalBytes(token.serialize(), new Uint8Array(Buffer.from(out.token, "base64url"))), '"token" and "authorization" differ');
  check(token.authInput.tokenType === BLIND_RSA.value, "token type is not 2");
  check(equalBytes(token.authInput.challengeDigest, await sha256(challenge.serialize())), "challenge digest mismatch");
  check(equalBytes(token.authInput.tokenKeyId, tokenKeyId), "token key id mismatch");

  // Verify as an origin would, with the public key taken from the published
  // SPKI (WebCrypto does not import the id-RSASSA-PSS OID, hence the conversion).
  const published = await crypto.subtle.importKey("spki", convertRSASSAPSSToEnc(tokenKey), BLIND_RSA.rsaParams, true, ["verify"]);
  check(await new Origin(BlindRSAMode.PSS).verify(token, published), "token does not verify under the issuer's public key");
  check(await issuer.verify(token), "Issuer.verify rejects the token");
  return token;
}

const origin = new Origin(BlindRSAMode.PSS, ["origin.example"]);
const challenge = origin.createTokenChallenge(issuerName, crypto.getRandomValues(new Uint8Array(32)));
const header = new WWWAuthenticateHeader(challenge, tokenKey, 10);

try {
  // Quoted parameters plus one the client must ignore.
  const quoted = `${header.toString(true)}, realm="selftest"`;
  const first = await checkIssued(await runClient(SECRET, quoted), challenge);
  // privacypass-ts's default form: bare parameters whose padding "=" makes them
  // non-RFC 9110 tokens; its parser accepts them through a lenient fallback.
  const second = await checkIssued(await runClient(SECRET, header.toString()), challenge);
  check(!equalBytes(first.authInput.nonce, second.authInput.nonce), "two tokens share a nonce");

  const wrong = await runClient("not-the-secret", quoted);
  check(wrong.code === 2, `wrong secret: exit ${wrong.code}, want 2 (${wrong.stderr.trim()})`);
  check(/issuer answered 401/.test(wrong.stderr), `wrong secret: stderr lacks the status: ${wrong.stderr.trim()}`);
  check(!wrong.stderr.includes("not-the-secret") && !wrong.stdout, "wrong secret: secret or output printed");

  const limited = await runClient(RATE_LIMITED_SECRET, quoted);
  check(limited.code === 2, `429: exit ${limited.code}, want 2`);
  check(limited.stderr.includes(`issuer answered 429 (Retry-After: ${RETRY_AFTER})`), `429: stderr: ${limited.stderr.trim()}`);

  const otherKey = await getPublicKeyBytes((await Issuer.generateKey(BlindRSAMode.PSS, {
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
  })).publicKey);
  const unknown = await runClient(SECRET, new WWWAuthenticateHeader(challenge, otherKey, 10).toString(true));
  check(unknown.code === 1 && /not among/.test(unknown.stderr), `unlisted token-key: exit ${unknown.code}: ${unknown.stderr.trim()}`);

  process.stdout.write("selftest ok\n");
} catch (e) {
  process.stdout.write(`selftest FAILED: ${e.message}\n`);
  process.exitCode = 1;
} finally {
  server.close();
}
