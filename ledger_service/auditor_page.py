"""The auditor's web page (served at /auditor): upload a document and its salt, see the verdict check by check,
download the proof bundle to verify it again offline. Static HTML and a script of its own (the page's
Content-Security-Policy allows no inline script); every value shown is set as text, never as HTML."""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PartLedger — document check (审计核验)</title>
<style>
  body { font: 15px/1.5 system-ui, "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; margin: 0; color: #1c2430; background: #f4f6f8; }
  main { max-width: 920px; margin: 0 auto; padding: 24px; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  .sub { color: #5b6675; margin: 0 0 20px; }
  form { display: grid; grid-template-columns: 140px 1fr; gap: 10px 14px; align-items: center; background: #fff; padding: 18px; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
  input[type=text], input[type=password] { font: 14px ui-monospace, monospace; padding: 6px 8px; border: 1px solid #c5ccd6; border-radius: 4px; }
  button { grid-column: 2; justify-self: start; font-size: 15px; padding: 8px 22px; border: 0; border-radius: 4px; background: #1f5fbf; color: #fff; cursor: pointer; }
  button:disabled { background: #8aa3c9; }
  #result { margin-top: 20px; background: #fff; padding: 18px; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
  #verdict { font-size: 19px; font-weight: 600; padding: 10px 14px; border-radius: 6px; margin: 0 0 14px; }
  #verdict[data-state=valid] { background: #e3f5e8; color: #14612d; }
  #verdict[data-state=invalid], #verdict[data-state=error] { background: #fbe5e5; color: #8f1d1d; }
  table { border-collapse: collapse; width: 100%; margin: 0 0 14px; font-size: 13px; }
  td, th { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid #e6e9ee; word-break: break-all; }
  td.mark { width: 1.5em; font-weight: 700; }
  td.ok { color: #14612d; } td.failed { color: #b42323; }
  td.name { white-space: nowrap; word-break: normal; font-weight: 600; }
  #download { display: inline-block; padding: 7px 16px; background: #2d3b4f; color: #fff; border-radius: 4px; text-decoration: none; }
  .hint { color: #5b6675; font-size: 13px; }
  code { font: 13px ui-monospace, monospace; }
</style>
</head>
<body>
<main>
  <h1>Check a trade document against the consortium chain</h1>
  <p class="sub">审计核验 — the file and its salt give the document hash; the chain says who anchored it, when, and who signed it.</p>
  <p class="hint">Auditors and regulators with a console account: sign in at <a href="/console/audit">/console/audit</a> (审计控制台) instead of pasting an API key.</p>
  <form id="check" autocomplete="off">
    <label for="api-key">API key</label><input id="api-key" type="password" required placeholder="plk_…">
    <label for="document">Document</label><input id="document" type="file" required>
    <label for="salt">Salt</label><input id="salt" type="text" required pattern="0x[0-9a-fA-F]{64}" placeholder="0x + 64 hex digits, from the party that shared the document">
    <button id="verify" type="submit">Verify</button>
  </form>
  <section id="result" hidden>
    <p id="verdict" role="status"></p>
    <table id="checks"><thead><tr><th></th><th>check</th><th>result</th></tr></thead><tbody></tbody></table>
    <table id="facts"><tbody></tbody></table>
    <p><a id="download" href="#" hidden>Download the proof bundle</a></p>
    <p class="hint">This verdict was computed by this service against its own node. Check it yourself, offline and
      without this service:
      <code>partledger proof verify bundle.json --document FILE --trusted-block N:0xHASH</code>
      (or <code>--checkpoints checkpoints.json</code>, or <code>--rpc</code> a node of your own).</p>
  </section>
</main>
<script src="/auditor.js"></script>
</body>
</html>
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let bundleUrl = null;

$("api-key").value = sessionStorage.getItem("partledger-api-key") || "";

function row(table, cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  $(table).querySelector("tbody").appendChild(tr);
}

function reset(state, message) {
  $("result").hidden = false;
  $("verdict").dataset.state = state;
  $("verdict").textContent = message;
  for (const table of ["checks", "facts"]) $(table).querySelector("tbody").replaceChildren();
  $("download").hidden = true;
  if (bundleUrl) { URL.revokeObjectURL(bundleUrl); bundleUrl = null; }
}

function render(answer) {
  const verdict = answer.verdict;
  const block = answer.bundle.block.number;
  reset(verdict.valid ? "valid" : "invalid", verdict.valid
    ? `VALID — this file is the document anchored in block ${block}, signed by both parties`
    : `INVALID — failed: ${verdict.failed.join(", ")}`);
  for (const check of verdict.checks) {
    row("checks", [[check.ok ? "✓" : "✗", "mark " + (check.ok ? "ok" : "failed")], [check.name, "name"], [check.detail, ""]]);
  }
  for (const fact of verdict.facts) row("facts", [[fact.label, "name"], [fact.value, ""]]);
  bundleUrl = URL.createObjectURL(new Blob([JSON.stringify(answer.bundle, null, 1) + "\n"], { type: "application/json" }));
  $("download").href = bundleUrl;
  $("download").download = `proof-${answer.doc_hash.slice(2, 14)}.json`;
  $("download").hidden = false;
}

$("check").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  sessionStorage.setItem("partledger-api-key", key);
  const file = $("document").files[0];
  $("verify").disabled = true;
  reset("busy", "Checking…");
  try {
    const reply = await fetch("/v1/evidence/verify", {
      method: "POST",
      headers: { "Authorization": "Bearer " + key, "X-Document-Salt": $("salt").value.trim(), "Content-Type": "application/octet-stream" },
      body: file,
    });
    const answer = await reply.json();
    if (reply.ok) render(answer);
    else reset("error", `NOT VERIFIED — ${answer.error.message} (${answer.error.code})`);
  } catch (error) {
    reset("error", "NOT VERIFIED — the service did not answer: " + error);
  } finally {
    $("verify").disabled = false;
  }
});
"""
