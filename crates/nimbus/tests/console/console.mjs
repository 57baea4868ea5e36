// Drives the Nimbus web console in a real browser (Debian's Chromium through playwright-core),
// as a person would: sign in, read the services, edit a traffic split, read events and logs,
// deploy a version, delete a version and a service, invoke a function, read usage. crates/nimbus/tests/console.rs starts the server, deploys what
// this script expects, runs it and checks the API afterwards.
//
//   CONSOLE_URL=http://127.0.0.1:8080/console NIMBUS_TOKEN=... OUT_DIR=/tmp/x node console.mjs
//
// Expects services `web` (at least 3 metered requests) and `scratch`, each with versions v1 and v2
// (v2 taking the traffic), and python function `echo` (returns {"echo": event}, raises ValueError for
// {"fail": ...}; a timer trigger "0 9 * * 1-5").
// Prints one JSON summary line on stdout; exits non-zero when a check fails.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const STEP_TIMEOUT_MS = 15_000;

const consoleUrl = required("CONSOLE_URL");
const token = required("NIMBUS_TOKEN");
const outDir = required("OUT_DIR");

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls until the element's text contains `text` (the console refreshes every 2 s).
async function waitForText(locator, text, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let last = "";
  while (Date.now() < deadline) {
    last = (await locator.textContent({ timeout: 1000 }).catch(() => "")) ?? "";
    if (last.includes(text)) return last;
    await sleep(100);
  }
  throw new Error(`${what}: wanted text containing ${JSON.stringify(text)}, last saw ${JSON.stringify(last)}`);
}

async function expectHidden(locator, what) {
  if (await locator.isVisible()) {
    throw new Error(`${what} should be hidden but shows ${JSON.stringify(await locator.textContent())}`);
  }
}

const summary = { ok: false, steps: [], screenshots: [], browserErrors: [] };
let currentStep = "launch";

function step(name) {
  currentStep = name;
  summary.steps.push(name);
}

// Without the background-networking flags Chromium keeps calling home on a closed network.
const userDataDir = mkdtempSync(join(tmpdir(), "nimbus-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1366, height: 1000 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
context.setDefaultTimeout(STEP_TIMEOUT_MS);
const page = context.pages()[0] ?? (await context.newPage());

// Script errors and CSP refusals are bugs; "Failed to load resource" is the browser noting the
// API's expected 4xx answers (the wrong token, the bad split).
page.on("pageerror", (error) => summary.browserErrors.push(`pageerror: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
    summary.browserErrors.push(`console: ${message.text()}`);
  }
});

async function screenshot(name) {
  const path = join(outDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

try {
  step("a wrong token is refused");
  await page.goto(consoleUrl);
  await page.locator("#token").fill("not-the-token");
  await page.locator("#signin-button").click();
  await waitForText(page.locator("#signin-error"), "Wrong token", "sign-in error");
  await expectHidden(page.locator("#app"), "the app after a wrong token");

  step("the right token signs in and lists web");
  await page.locator("#token").fill(token);
  await page.locator("#signin-button").click();
  const webRow = page.getByTestId("service-row-web");
  await waitForText(webRow, "v2 100%", "web's traffic summary");
  const webCells = await webRow.locator("td").allTextContents();
  if (webCells[3] !== "2") throw new Error(`web should list 2 versions, row is ${JSON.stringify(webCells)}`);
  if (!webCells[1].startsWith("http://web--default.")) throw new Error(`web's URL: ${webCells[1]}`);
  await expectHidden(page.locator("#signin"), "the sign-in form after signing in");
  await waitForText(page.getByTestId("service-row-echo"), "function", "echo's row, marked a function");
  await screenshot("services");

  step("the service page shows v1 and v2");
  await webRow.getByRole("link", { name: "web", exact: true }).click();
  await page.waitForURL(/#\/services\/web$/);
  await waitForText(page.getByTestId("version-row-v1"), "0%", "v1's row");
  await waitForText(page.getByTestId("version-row-v2"), "ready", "v2's row");
  await waitForText(page.getByTestId("version-row-v2"), "100%", "v2's row");

  step("a split of v1=30 v2=70 is saved");
  await page.getByTestId("traffic-v1").fill("30");
  await page.getByTestId("traffic-v2").fill("70");
  await waitForText(page.locator("#traffic-total"), "100", "the running total");
  await page.locator("#traffic-save").click();
  await waitForText(page.locator("#traffic-saved"), "v1 30% · v2 70%", "the saved message");
  await waitForText(page.getByTestId("version-row-v1"), "30%", "v1's row after the save");
  await waitForText(page.getByTestId("version-row-v2"), "70%", "v2's row after the save");

  step("a split of v1=50 v2=60 shows the API's error");
  await page.getByTestId("traffic-v1").fill("50");
  await page.getByTestId("traffic-v2").fill("60");
  await page.locator("#traffic-save").click();
  const refusal = await waitForText(page.locator("#traffic-error"), "sum to exactly 100, got 110", "the refusal");
  if (!refusal.includes("field: traffic.split")) throw new Error(`the refusal names no field: ${refusal}`);
  await expectHidden(page.locator("#traffic-saved"), "the saved message after a refusal");
  summary.trafficError = refusal;

  step("events and logs");
  await waitForText(page.locator("#events-list"), "version v2 created", "the events timeline");
  await waitForText(page.locator("#logs-lines"), "listening on", "the logs pane");
  await page.locator("#logs-filter").fill("listening on");
  const filtered = (await page.locator("#logs-lines").textContent()).split("\n");
  if (!filtered.every((line) => line.includes("listening on"))) {
    throw new Error(`the filter kept other lines: ${JSON.stringify(filtered)}`);
  }
  await page.locator("#logs-filter").fill("no line says this");
  await waitForText(page.locator("#logs-lines"), "No line matches the filter.", "the empty filter");
  await page.locator("#logs-filter").fill("");

  step("a deploy line that is not KEY=VALUE is caught before sending");
  await waitForText(page.locator("#deploy-base"), "v2, command", "what a deploy starts from");
  await page.getByTestId("deploy-env").fill("GREETING=three\nNOEQUALS");
  await page.locator("#deploy-button").click();
  await waitForText(page.locator("#deploy-error"), 'line 2 ("NOEQUALS")', "the form's own check");

  step("a deploy the API refuses shows its error and field");
  await page.getByTestId("deploy-env").fill("GREETING=three");
  await page.getByTestId("deploy-min").fill("5");
  await page.getByTestId("deploy-max").fill("2");
  await page.locator("#deploy-button").click();
  const deployRefusal = await waitForText(page.locator("#deploy-error"), "min instances 5 is above max instances 2", "the refusal");
  if (!deployRefusal.includes("field: min_instances")) throw new Error(`the refusal names no field: ${deployRefusal}`);
  await expectHidden(page.locator("#deploy-done"), "the deployed message after a refusal");
  summary.deployError = deployRefusal;

  step("v3 is deployed from v2 with traffic held back");
  await page.getByTestId("deploy-min").fill("");
  await page.getByTestId("deploy-max").fill("");
  await page.getByTestId("deploy-concurrency").fill("5");
  await page.getByTestId("deploy-no-traffic").check();
  await page.locator("#deploy-button").click();
  await waitForText(page.locator("#deploy-done"), "Deployed v3.", "the deployed message");
  await expectHidden(page.locator("#deploy-error"), "the deploy error after a good deploy");
  await waitForText(page.getByTestId("version-row-v3"), "0%", "v3's row");
  await waitForText(page.getByTestId("version-row-v2"), "70%", "v2's row after the deploy");

  step("v2 cannot be deleted while it takes traffic");
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByTestId("delete-version-v2").click();
  await waitForText(page.locator("#versions-error"), "takes 70% of traffic", "the refusal to delete v2");
  await waitForText(page.getByTestId("version-row-v2"), "70%", "v2 after the refusal");
  await page.getByTestId("traffic-v1").fill("50"); // keep the refused split on screen
  await screenshot("service");

  step("scratch: a version, then the whole service, deleted");
  await page.goto(`${consoleUrl}#/services/scratch`);
  await waitForText(page.getByTestId("version-row-v2"), "100%", "scratch v2's row");
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByTestId("delete-version-v1").click();
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while ((await page.getByTestId("version-row-v1").count()) > 0) {
    if (Date.now() > deadline) throw new Error("scratch v1's row is still listed after its delete");
    await sleep(100);
  }
  await expectHidden(page.locator("#versions-error"), "the versions error after a good delete");
  await page.getByTestId("delete-service-confirm").fill("scratc");
  await page.getByTestId("delete-service-button").click();
  await waitForText(page.locator("#delete-service-error"), "Type scratch to confirm", "the confirmation check");
  await page.getByTestId("delete-service-confirm").fill("scratch");
  await page.getByTestId("delete-service-button").click();
  await page.waitForURL(/#\/services$/);
  await waitForText(page.getByTestId("service-row-web"), "web", "the services list after the delete");
  if ((await page.getByTestId("service-row-scratch").count()) > 0) throw new Error("scratch is still listed");

  step("functions: list and invoke");
  await page.getByTestId("nav-functions").click();
  await waitForText(page.getByTestId("function-row-echo"), "python3", "echo's row");
  await waitForText(page.getByTestId("function-row-echo"), "timer 0 9 * * 1-5", "echo's timer trigger");
  await page.locator("#invoke-function").selectOption("echo");
  await page.locator("#invoke-payload").fill("{not json");
  await page.locator("#invoke-button").click();
  await waitForText(page.locator("#invoke-error"), "not valid JSON", "the JSON check");
  await page.locator("#invoke-payload").fill('{"fail": "boom"}');
  await page.locator("#invoke-button").click();
  await waitForText(page.locator("#invoke-result"), "bad input: boom", "the handler's error");
  await page.locator("#invoke-payload").fill('{"from": "console"}');
  await page.locator("#invoke-button").click();
  await waitForText(page.locator("#invoke-result"), '"from": "console"', "the result");
  await expectHidden(page.locator("#invoke-error"), "the invoke error after a good call");
  await expectHidden(page.locator("#error-banner"), "the error banner on Functions");
  await screenshot("functions");

  step("usage");
  await page.getByTestId("nav-usage").click();
  await waitForText(page.locator("#usage-total"), "Total", "the usage total");
  // The test sent requests to web before starting this script, and waited until they were metered.
  const usageCells = await page.getByTestId("usage-row-web").locator("td").allTextContents();
  if (!(Number(usageCells[1].replace(/[^0-9]/g, "")) >= 3) || !usageCells[6].endsWith("USD")) {
    throw new Error(`web's usage row: ${JSON.stringify(usageCells)}`);
  }
  summary.usageWeb = usageCells;
  await expectHidden(page.locator("#error-banner"), "the error banner on Usage");
  summary.usageRows = await page.locator("#usage-rows tr").count();
  await screenshot("usage");

  step("sign out");
  await page.getByTestId("sign-out").click();
  await page.locator("#token").waitFor({ state: "visible" });

  if (summary.browserErrors.length > 0) throw new Error(`browser errors: ${summary.browserErrors.join("; ")}`);
  summary.ok = true;
} catch (error) {
  summary.failedStep = currentStep;
  summary.error = String(error && error.stack ? error.stack : error);
  await screenshot("failure").catch(() => {});
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
