// Connects to a real OpenClaw gateway's WebSocket the way the DefenseClaw
// sidecar does (cisco-ai-defense/defenseclaw internal/gateway/client.go and
// device.go), with the sidecar's device key and the shared gateway token,
// and says whether the gateway accepted it as an already paired device.
//
//   node connect.mjs <ws-url> <device.key> <token> [timeout-ms]
//   node connect.mjs --keygen <device.key>        write a new key (0600)
//   node connect.mjs --paired-entry <device.key>  print {deviceId, entry}:
//        a devices/paired.json entry OpenClaw 2026.9.6 accepts for the key
//
// device.key is DefenseClaw's format: PEM type "ED25519 PRIVATE KEY" holding
// the raw 32-byte seed (not PKCS#8). The device id is the hex SHA-256 of the
// raw 32-byte public key; the signature is OpenClaw's v3 device-auth payload.
//
// Exit 0: hello-ok (one JSON line on stdout: device id, role, scopes).
// Exit 2: the gateway refused (its error code, message and details on
//         stderr; "NOT_PAIRED ... pairing required" for an unpaired key).
// Exit 3: the connection failed or closed before an answer.
// Exit 4: timeout.  Exit 64: usage or key file error.
//
// Needs Node >= 22 (global WebSocket); no npm packages.
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

// What the DefenseClaw sidecar sends (client.go sendConnect).
const CLIENT_ID = "gateway-client";
const CLIENT_MODE = "backend";
const ROLE = "operator";
const SCOPES = ["operator.read", "operator.write", "operator.admin", "operator.approvals"];
const PLATFORM = "linux";
const MIN_PROTOCOL = 3;
const MAX_PROTOCOL = 4;

// DER prefixes of an Ed25519 PKCS#8 private key and SPKI public key.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

function die(code, message) {
  process.stderr.write(`connect.mjs: ${message}\n`);
  process.exit(code);
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function loadDefenseClawKey(path) {
  let text;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    die(64, `cannot read ${path}: ${e.message}`);
  }
  const m = /-----BEGIN ED25519 PRIVATE KEY-----([\s\S]*?)-----END ED25519 PRIVATE KEY-----/.exec(text);
  if (!m) die(64, `${path}: no PEM block of type "ED25519 PRIVATE KEY" (DefenseClaw's device.key format)`);
  const seed = Buffer.from(m[1].replace(/\s+/g, ""), "base64");
  if (seed.length !== 32) die(64, `${path}: seed is ${seed.length} bytes, expected 32`);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  const publicKeyRaw = spki.subarray(SPKI_PREFIX.length);
  const deviceId = createHash("sha256").update(publicKeyRaw).digest("hex");
  return { privateKey, publicKeyRaw, deviceId };
}

function connectParams(identity, token, nonce) {
  const signedAt = Date.now();
  // OpenClaw's buildDeviceAuthPayloadV3 (packages/gateway-client/src/device-auth.ts).
  const payload = [
    "v3",
    identity.deviceId,
    CLIENT_ID,
    CLIENT_MODE,
    ROLE,
    SCOPES.join(","),
    String(signedAt),
    token,
    nonce,
    PLATFORM.trim().toLowerCase(),
    "", // deviceFamily: none
  ].join("|");
  const signature = sign(null, Buffer.from(payload, "utf8"), identity.privateKey);
  return {
    minProtocol: MIN_PROTOCOL,
    maxProtocol: MAX_PROTOCOL,
    client: { id: CLIENT_ID, version: "1.0.0", platform: PLATFORM, mode: CLIENT_MODE },
    role: ROLE,
    scopes: SCOPES,
    caps: ["tool-events"],
    auth: { token },
    device: {
      id: identity.deviceId,
      publicKey: b64url(identity.publicKeyRaw),
      signature: b64url(signature),
      signedAt,
      nonce,
    },
    userAgent: "sandbox-tests/connect.mjs",
    locale: "en-US",
  };
}

// One attempt: resolves {kind: "ok", payload} | {kind: "refused", error} |
// {kind: "failed", message}.
function attempt(url, identity, token) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve(result);
    };
    const ws = new WebSocket(url);
    const requestId = `sandbox-tests-${process.pid}-${Date.now()}`;
    ws.addEventListener("message", (ev) => {
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === "string" ? ev.data : Buffer.from(ev.data).toString("utf8"));
      } catch {
        return done({ kind: "failed", message: "unparseable frame from the gateway" });
      }
      if (frame.type === "event" && frame.event === "connect.challenge") {
        const nonce = frame.payload?.nonce;
        if (typeof nonce !== "string" || nonce === "") return done({ kind: "failed", message: "empty challenge nonce" });
        ws.send(JSON.stringify({ type: "req", id: requestId, method: "connect", params: connectParams(identity, token, nonce) }));
        return;
      }
      if (frame.type === "res" && frame.id === requestId) {
        if (frame.ok && frame.payload?.type === "hello-ok") return done({ kind: "ok", payload: frame.payload });
        return done({ kind: "refused", error: frame.error ?? { message: "connect rejected without an error" } });
      }
    });
    ws.addEventListener("error", (ev) => done({ kind: "failed", message: `websocket error: ${ev.message ?? ev.error?.message ?? "unknown"}` }));
    ws.addEventListener("close", (ev) => done({ kind: "failed", message: `closed before an answer (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ""})` }));
  });
}

// DefenseClaw's _pre_pair_device entry (cmd_setup_sandbox.py), minus its
// `deviceFamily: null` (not a string: dropped with a warning on import), plus
// what OpenClaw 2026.9.6 also needs: an active operator token in `tokens`.
// Without one the device has no effective role, and the gateway answers
// "pairing required" (reason role-upgrade) even though the key is listed.
function pairedEntry(identity) {
  const now = Date.now();
  return {
    deviceId: identity.deviceId,
    publicKey: b64url(identity.publicKeyRaw),
    displayName: "defenseclaw-sidecar",
    platform: PLATFORM,
    clientId: CLIENT_ID,
    clientMode: CLIENT_MODE,
    role: ROLE,
    roles: [ROLE],
    scopes: SCOPES,
    approvedScopes: SCOPES,
    tokens: {
      [ROLE]: { token: b64url(randomBytes(32)), role: ROLE, scopes: [...SCOPES].sort(), createdAtMs: now },
    },
    createdAtMs: now,
    approvedAtMs: now,
  };
}

async function main() {
  if (process.argv[2] === "--keygen" && process.argv[3]) {
    const pem = `-----BEGIN ED25519 PRIVATE KEY-----\n${randomBytes(32).toString("base64")}\n-----END ED25519 PRIVATE KEY-----\n`;
    writeFileSync(process.argv[3], pem, { mode: 0o600, flag: "wx" });
    return;
  }
  if (process.argv[2] === "--paired-entry" && process.argv[3]) {
    const identity = loadDefenseClawKey(process.argv[3]);
    process.stdout.write(`${JSON.stringify({ deviceId: identity.deviceId, entry: pairedEntry(identity) })}\n`);
    return;
  }
  const [url, keyPath, token, timeoutArg] = process.argv.slice(2);
  if (!url || !keyPath || token === undefined) die(64, "usage: node connect.mjs <ws-url> <device.key> <token> [timeout-ms]");
  const identity = loadDefenseClawKey(keyPath);
  const deadline = Date.now() + Number(timeoutArg ?? 20000);
  const timer = setTimeout(() => die(4, `no answer from ${url} in time`), Math.max(0, deadline - Date.now()));
  for (;;) {
    const result = await attempt(url, identity, token);
    if (result.kind === "ok") {
      clearTimeout(timer);
      const auth = result.payload.auth ?? {};
      process.stdout.write(
        `${JSON.stringify({
          accepted: true,
          deviceId: identity.deviceId,
          role: auth.role ?? null,
          scopes: auth.scopes ?? null,
          deviceToken: typeof auth.deviceToken === "string",
          protocol: result.payload.protocol ?? null,
        })}\n`,
      );
      process.exit(0);
    }
    // "gateway starting; retry shortly" (UNAVAILABLE, retryable) and a
    // refused TCP connect while it binds are worth another try.
    const retryable = result.kind === "failed" || (result.kind === "refused" && result.error?.retryable === true);
    if (!retryable || Date.now() + 300 > deadline) {
      clearTimeout(timer);
      if (result.kind === "refused") {
        const e = result.error;
        die(2, `refused: ${e.code ?? "?"}: ${e.message ?? ""}${e.details ? ` ${JSON.stringify(e.details)}` : ""} (device ${identity.deviceId})`);
      }
      die(3, result.message);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

main();
