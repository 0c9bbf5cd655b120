#!/usr/bin/env node
// Independent Privacy Pass client (RFC 9576/9577/9578) for interop tests:
// token type 0x0002, Blind RSA (2048-bit), RSABSSA-SHA384-PSS-Deterministic,
// built on @cloudflare/privacypass-ts.
//
// node privacypass-client.mjs --issuer BASE_URL --secret SECRET --challenge 'WWW-AUTHENTICATE VALUE'
//
// 1. Parses the PrivateToken challenge with privacypass-ts and takes the first
//    one of token type 2.
// 2. GETs BASE_URL/.well-known/private-token-issuer-directory and requires
//    the challenge's token-key to be one of the directory's type-2 keys.
// 3. POSTs a TokenRequest to the directory's issuer-request-uri with
//    "Authorization: Bearer SECRET" and finalizes the TokenResponse.
//
// Prints one JSON line: {"authorization": "PrivateToken token=...", "token": "<padded base64url>"}.
// On failure: one line on stderr; exit 2 when the issuer answered with an
// HTTP error status, 1 for anything else. The secret is never printed.

import { parseArgs } from "node:util";
import {
  AuthorizationHeader,
  MediaType,
  PRIVATE_TOKEN_ISSUER_DIRECTORY,
  publicVerif,
  TOKEN_TYPES,
  WWWAuthenticateHeader,
} from "@cloudflare/privacypass-ts";

const EXIT_OTHER = 1;
const EXIT_HTTP = 2;
const BLIND_RSA = TOKEN_TYPES.BLIND_RSA; // token type 2, Nk = 256

let secret; // kept so that fail() can scrub it from any message

function fail(msg, code = EXIT_OTHER) {
  const line = secret ? msg.replaceAll(secret, "<secret>") : msg;
  process.stderr.write(`privacypass-client: ${line.replace(/\s*\n\s*/g, " ")}\n`);
  process.exit(code);
}

function mediaType(headers) {
  return (headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
}

function httpError(what, res) {
  const retryAfter = res.headers.get("retry-after");
  fail(`${what}: issuer answered ${res.status}${retryAfter !== null ? ` (Retry-After: ${retryAfter})` : ""}`, EXIT_HTTP);
}

// base64url with or without padding; Buffer alone would skip invalid characters.
function fromBase64url(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]*={0,2}$/.test(s)) throw new Error("not base64url");
  return new Uint8Array(Buffer.from(s, "base64url"));
}

function toBase64urlPadded(bytes) {
  const s = Buffer.from(bytes).toString("base64url");
  return s + "=".repeat((4 - (s.length % 4)) % 4);
}

function equalBytes(a, b) {
  return a.byteLength === b.byteLength && Buffer.from(a).equals(Buffer.from(b));
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        issuer: { type: "string" },
        secret: { type: "string" },
        challenge: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    fail(`${e.message}; usage: node privacypass-client.mjs --issuer BASE_URL --secret SECRET --challenge 'PrivateToken challenge=..., token-key=...'`);
  }
  if (!args.issuer || args.secret === undefined || !args.challenge) {
    fail("--issuer, --secret and --challenge are required");
  }
  secret = args.secret;
  // A header-invalid secret would make fetch throw an error that quotes it.
  if (!/^[\x21-\x7e]+$/.test(secret)) fail("--secret must be non-empty visible ASCII");

  // 1. The challenge, parsed by privacypass-ts (RFC 9577 section 2.1).
  let parsed;
  try {
    parsed = WWWAuthenticateHeader.parse(args.challenge);
  } catch (e) {
    // privacypass-ts decodes with rfc4648, which insists on the "=" padding.
    const hint = e.message === "Invalid padding" ? ' (privacypass-ts needs base64url with its "=" padding)' : "";
    fail(`privacypass-ts cannot parse the challenge: ${e.message}${hint}`);
  }
  const header = parsed.find((h) => h.challenge.tokenType === BLIND_RSA.value);
  if (!header) {
    fail(parsed.length
      ? `no challenge of token type ${BLIND_RSA.value} (got types ${parsed.map((h) => h.challenge.tokenType).join(", ")})`
      : "no PrivateToken challenge found in --challenge");
  }

  // 2. Issuer directory (RFC 9578 section 4).
  let directoryUrl;
  try {
    directoryUrl = new URL(args.issuer.replace(/\/+$/, "") + PRIVATE_TOKEN_ISSUER_DIRECTORY);
  } catch (e) {
    fail(`bad --issuer URL: ${e.message}`);
  }
  let dirRes;
  try {
    dirRes = await fetch(directoryUrl, { headers: { accept: MediaType.PRIVATE_TOKEN_ISSUER_DIRECTORY } });
  } catch (e) {
    fail(`GET ${directoryUrl} failed: ${e.cause?.message ?? e.message}`);
  }
  if (dirRes.status !== 200) httpError(`GET ${directoryUrl}`, dirRes);
  if (mediaType(dirRes.headers) !== MediaType.PRIVATE_TOKEN_ISSUER_DIRECTORY) {
    fail(`GET ${directoryUrl}: content type ${JSON.stringify(dirRes.headers.get("content-type"))}, want ${MediaType.PRIVATE_TOKEN_ISSUER_DIRECTORY}`);
  }
  let directory;
  try {
    directory = JSON.parse(await dirRes.text());
  } catch (e) {
    fail(`issuer directory is not JSON: ${e.message}`);
  }
  const requestUri = directory?.["issuer-request-uri"];
  const tokenKeys = directory?.["token-keys"];
  if (typeof requestUri !== "string" || !Array.isArray(tokenKeys)) {
    fail('issuer directory needs a string "issuer-request-uri" and an array "token-keys"');
  }
  // RFC 9578 section 4: absolute, or relative to the directory's own URL.
  let requestUrl;
  try {
    requestUrl = new URL(requestUri, directoryUrl);
  } catch (e) {
    fail(`bad issuer-request-uri ${JSON.stringify(requestUri)}: ${e.message}`);
  }
  // Compare keys as bytes: the directory and the challenge may differ in padding.
  const knownKeys = [];
  for (const entry of tokenKeys) {
    if (entry?.["token-type"] !== BLIND_RSA.value) continue;
    try {
      knownKeys.push(fromBase64url(entry["token-key"]));
    } catch {
      fail(`issuer directory has a type-${BLIND_RSA.value} token-key that is not base64url: ${JSON.stringify(entry["token-key"])}`);
    }
  }
  if (!knownKeys.some((k) => equalBytes(k, header.tokenKey))) {
    fail(`the challenge's token-key is not among the issuer directory's ${knownKeys.length} type-${BLIND_RSA.value} key(s)`);
  }

  // 3. Token request (RFC 9578 section 6.1). BlindRSAMode.PSS selects
  // RSABSSA-SHA384-PSS-Deterministic (salt length 48); PSSZero is another suite.
  const client = new publicVerif.Client(publicVerif.BlindRSAMode.PSS);
  let tokenRequest;
  try {
    tokenRequest = await client.createTokenRequest(header.challenge, header.tokenKey);
  } catch (e) {
    fail(`privacypass-ts cannot build the token request: ${e.message}`);
  }
  let res;
  try {
    res = await fetch(requestUrl, {
      method: "POST",
      headers: {
        "content-type": MediaType.PRIVATE_TOKEN_REQUEST,
        accept: MediaType.PRIVATE_TOKEN_RESPONSE,
        authorization: `Bearer ${secret}`,
      },
      body: tokenRequest.serialize(),
      // A redirect is reported as an HTTP error rather than followed with the secret.
      redirect: "manual",
    });
  } catch (e) {
    fail(`POST ${requestUrl} failed: ${e.cause?.message ?? e.message}`);
  }
  if (res.status !== 200) httpError(`POST ${requestUrl}`, res);
  if (mediaType(res.headers) !== MediaType.PRIVATE_TOKEN_RESPONSE) {
    fail(`POST ${requestUrl}: content type ${JSON.stringify(res.headers.get("content-type"))}, want ${MediaType.PRIVATE_TOKEN_RESPONSE}`);
  }
  const body = new Uint8Array(await res.arrayBuffer());
  // privacypass-ts would silently drop bytes beyond Nk.
  if (body.byteLength !== BLIND_RSA.Nk) fail(`token response is ${body.byteLength} bytes, want ${BLIND_RSA.Nk}`);

  // 4. Finalize: unblinds and checks the RSASSA-PSS signature on the token input.
  let token;
  try {
    token = await client.finalize(client.deserializeTokenResponse(body));
  } catch (e) {
    fail(`privacypass-ts cannot finalize the token: ${e.message}`);
  }
  process.stdout.write(
    JSON.stringify({
      authorization: new AuthorizationHeader(token).toString(),
      token: toBase64urlPadded(token.serialize()),
    }) + "\n",
  );
}

main().catch((e) => fail(e?.stack ?? String(e)));
