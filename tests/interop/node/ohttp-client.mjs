#!/usr/bin/env node
// Independent Oblivious HTTP (RFC 9458) client for interop tests.
//
// node ohttp-client.mjs --keys-url URL --gateway URL [--method POST]
//                       [--url https://example.com/path] [--body-hex HEX]
//
// Prints one JSON line: {"status": 200, "inner_hex": ..., "request_bhttp_hex": ...}
// Exits non-zero with a message on stderr on any failure.

import { parseArgs } from "node:util";
import { BHttpEncoder } from "bhttp-js";
import {
  decapsulateResponse,
  encapsulateRequest,
  fromHex,
  newSuite,
  selectConfig,
  toHex,
} from "./ohttp-common.mjs";

function fail(msg) {
  process.stderr.write(`ohttp-client: ${msg}\n`);
  process.exit(1);
}

function mediaType(headers) {
  return (headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
}

async function bodySnippet(res) {
  try {
    const b = new Uint8Array(await res.arrayBuffer());
    return b.byteLength ? ` body(hex, first 64 bytes)=${toHex(b.subarray(0, 64))}` : " (empty body)";
  } catch {
    return "";
  }
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        "keys-url": { type: "string" },
        gateway: { type: "string" },
        method: { type: "string" },
        url: { type: "string", default: "https://example.com/" },
        "body-hex": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    fail(`${e.message}\nusage: node ohttp-client.mjs --keys-url URL --gateway URL [--method POST] [--url https://example.com/path] [--body-hex HEX]`);
  }
  if (!args["keys-url"] || !args.gateway) fail("--keys-url and --gateway are required");

  let body;
  try {
    body = args["body-hex"] !== undefined ? fromHex(args["body-hex"]) : undefined;
  } catch (e) {
    fail(`--body-hex: ${e.message}`);
  }
  const method = (args.method ?? (body !== undefined ? "POST" : "GET")).toUpperCase();
  const target = new URL(args.url);
  // bhttp-js 0.2.1 encodes only url.pathname as :path and silently drops the
  // query; refuse rather than send a request that differs from what was asked.
  if (target.search) fail("--url with a query string is not supported (bhttp-js 0.2.1 drops the query from :path)");

  // 1. Key configuration (RFC 9458 section 3.2).
  let keysRes;
  try {
    keysRes = await fetch(args["keys-url"], { headers: { accept: "application/ohttp-keys" } });
  } catch (e) {
    fail(`GET ${args["keys-url"]} failed: ${e.cause?.message ?? e.message}`);
  }
  if (keysRes.status !== 200) fail(`GET ${args["keys-url"]}: HTTP status ${keysRes.status}${await bodySnippet(keysRes)}`);
  if (mediaType(keysRes.headers) !== "application/ohttp-keys") {
    fail(`GET ${args["keys-url"]}: content type ${JSON.stringify(keysRes.headers.get("content-type"))}, want application/ohttp-keys`);
  }
  const keysBody = new Uint8Array(await keysRes.arrayBuffer());
  let config;
  try {
    config = selectConfig(keysBody);
  } catch (e) {
    fail(`bad application/ohttp-keys body: ${e.message}`);
  }
  if (!config) fail("no key config offers DHKEM(X25519,HKDF-SHA256) with HKDF-SHA256/AES-128-GCM");

  // 2. Binary HTTP request (RFC 9292, known-length form) via bhttp-js.
  const init = { method };
  if (body !== undefined) init.body = body;
  let request;
  try {
    request = new Request(target, init);
  } catch (e) {
    fail(`cannot build request: ${e.message}`);
  }
  const requestBhttp = await new BHttpEncoder().encodeRequest(request);

  // 3. Encapsulate (RFC 9458 section 4.3) and send.
  const suite = newSuite();
  const { encRequest, enc, ctx } = await encapsulateRequest(suite, config, requestBhttp);
  let res;
  try {
    res = await fetch(args.gateway, {
      method: "POST",
      headers: { "content-type": "message/ohttp-req" },
      body: encRequest,
    });
  } catch (e) {
    fail(`POST ${args.gateway} failed: ${e.cause?.message ?? e.message}`);
  }
  if (res.status !== 200) fail(`POST ${args.gateway}: HTTP status ${res.status}${await bodySnippet(res)}`);
  if (mediaType(res.headers) !== "message/ohttp-res") {
    fail(`POST ${args.gateway}: content type ${JSON.stringify(res.headers.get("content-type"))}, want message/ohttp-res`);
  }

  // 4. Decapsulate the response (RFC 9458 section 4.4).
  const encResponse = new Uint8Array(await res.arrayBuffer());
  let inner;
  try {
    inner = await decapsulateResponse(ctx, enc, encResponse);
  } catch (e) {
    fail(`cannot decapsulate response (${encResponse.byteLength} bytes): ${e.message || e.name}`);
  }

  process.stdout.write(
    JSON.stringify({ status: res.status, inner_hex: toHex(inner), request_bhttp_hex: toHex(requestBhttp) }) + "\n",
  );
}

main().catch((e) => fail(e?.stack ?? String(e)));
