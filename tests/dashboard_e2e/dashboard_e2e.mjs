// Drives the brokeragents dashboard in headless Chromium; run by tests/test_dashboard.py.
//
//   node dashboard_e2e.mjs --url URL --screenshot PNG --agents A,B --worker NAME --calls N --text TEXT
//
// 1. Opens the page and waits until every agent and the worker are listed as alive, then prints
//    "READY" (the test then makes the call).
// 2. Waits for N calls, follows the newest one's reply tokens as they arrive over SSE, and checks
//    that they arrived in several steps (live, not all at once) and add up to TEXT.
// 3. Checks the call graph (N nodes, N-1 edges), takes a full-page screenshot (and one mid-stream,
//    PNG-live.png) and prints one JSON line: {"ok": true, ...} or {"ok": false, "error": ...}
//    (then exits 1).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    agents: { type: "string" },
    worker: { type: "string" },
    calls: { type: "string", default: "1" },
    text: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM_PATH || "/usr/bin/chromium" },
    "timeout-ms": { type: "string", default: "30000" },
  },
});
const timeout = Number(opts["timeout-ms"]);
const expectedCalls = Number(opts.calls);
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const userDataDir = mkdtempSync(join(tmpdir(), "ba-dashboard-e2e-"));
let context;
const result = { ok: false };
try {
  // A persistent context is how Playwright takes a --user-data-dir: a new, empty one.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium, headless: true, args: FLAGS, viewport: { width: 1400, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => consoleErrors.push(String(err)));
  await page.goto(opts.url, { timeout });

  // 1. The registry: agents and the worker, alive.
  for (const alias of opts.agents.split(",")) {
    await page.locator("#agents tbody tr", { hasText: alias }).locator(".pill.alive").waitFor({ timeout });
  }
  await page.locator("#workers tbody tr", { hasText: opts.worker }).locator(".pill.alive").waitFor({ timeout });
  console.log("READY");

  // 2. The calls, and the newest call's tokens arriving live.
  await page.waitForFunction((n) => document.querySelectorAll("#calls tbody tr[data-call]").length >= n,
    expectedCalls, { timeout });
  const steps = [];
  const deadline = Date.now() + timeout;
  for (;;) {
    const state = await page.evaluate(() => ({
      tokens: Number(document.querySelector("#reply").dataset.tokens),
      status: document.querySelector("#reply-status").textContent,
      call: document.querySelector("#reply-call").textContent,
    }));
    const last = steps[steps.length - 1];
    if (state.tokens > 0 && (!last || state.tokens !== last.tokens || state.call !== last.call)) {
      steps.push({ ...state, atMs: Date.now() });
      if (steps.length === 8 && state.status === "streaming") {
        await page.screenshot({ path: opts.screenshot.replace(/\.png$/, "") + "-live.png", fullPage: true });
      }
    }
    if (state.status === "complete") break;
    if (Date.now() > deadline) throw new Error(`the reply did not complete; last state ${JSON.stringify(state)}`);
    await page.waitForTimeout(25); // sampling the token counter while tokens stream in
  }
  const finalCall = steps.length ? steps[steps.length - 1].call : "";
  const liveSteps = steps.filter((s) => s.call === finalCall && s.status !== "complete");
  const replyText = (await page.locator("#reply .msg").allInnerTexts()).join("\n").trim();
  result.tokenSteps = liveSteps.map((s) => s.tokens);
  result.replyText = replyText;
  if (liveSteps.length < 3) throw new Error(`tokens did not arrive live: steps ${JSON.stringify(steps)}`);
  if (opts.text !== undefined && replyText !== opts.text.trim()) {
    throw new Error(`reply text ${JSON.stringify(replyText)} != ${JSON.stringify(opts.text.trim())}`);
  }

  // 3. The call graph, after the next overview poll has the final states.
  await page.waitForFunction((n) => document.querySelectorAll("#graph g.node").length >= n &&
      document.querySelectorAll("#graph path.edge").length >= n - 1 &&
      [...document.querySelectorAll("#calls tbody .pill")].every((p) => p.textContent === "done"),
    expectedCalls, { timeout });
  result.graphNodes = await page.locator("#graph g.node").count();
  result.graphEdges = await page.locator("#graph path.edge").count();
  result.calls = await page.locator("#calls tbody tr[data-call]").count();
  result.consoleErrors = consoleErrors;
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  result.screenshot = opts.screenshot;
  result.ok = consoleErrors.length === 0;
  if (!result.ok) result.error = `console errors: ${consoleErrors.join(" | ")}`;
} catch (err) {
  result.error = String(err && err.stack || err);
  try {
    const page = context && context.pages()[0];
    if (page) await page.screenshot({ path: opts.screenshot, fullPage: true });
  } catch {
    // the failure is already reported
  }
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
