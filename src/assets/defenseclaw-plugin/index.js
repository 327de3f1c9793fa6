// DefenseClaw guardrail extension for OpenClaw, installed by `sandbox setup`.
//
// Before every tool call, asks the DefenseClaw gateway's guardrail
// (plugins.entries.defenseclaw.config.gatewayUrl in openclaw.json, the
// sidecar API on the host IP) whether the call may run. Fails closed: if the sidecar
// cannot be reached or answers anything but an allow, the call is blocked.
"use strict";

const CHECK_PATH = "/v1/guardrail/evaluate";
const TIMEOUT_MS = 5000;

function guardrailUrl(pluginConfig) {
  const url = pluginConfig && pluginConfig.gatewayUrl;
  if (typeof url !== "string" || url === "") {
    return null;
  }
  return url.replace(/\/+$/, "") + CHECK_PATH;
}

async function check(url, event) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(event),
      signal: ctrl.signal,
    });
    if (!res.ok) {
      return { allow: false, reason: `guardrail answered HTTP ${res.status}` };
    }
    const verdict = await res.json();
    return { allow: verdict.allow === true, reason: verdict.reason || "" };
  } catch (err) {
    return { allow: false, reason: `guardrail unreachable: ${err.message}` };
  } finally {
    clearTimeout(timer);
  }
}

module.exports = function register(api) {
  const url = guardrailUrl(api.pluginConfig);
  if (!url) {
    api.logger.info("defenseclaw: no gatewayUrl in plugins.entries.defenseclaw.config; extension idle");
    return;
  }
  api.on("before_tool_call", async (event) => {
    const verdict = await check(url, { kind: "tool_call", tool: event.toolName, params: event.params });
    if (!verdict.allow) {
      return { block: true, blockReason: `DefenseClaw: ${verdict.reason || "blocked by policy"}` };
    }
    return undefined;
  });
};

module.exports.guardrailUrl = guardrailUrl;
