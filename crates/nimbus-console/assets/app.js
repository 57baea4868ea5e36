// Nimbus console: a small single-page app over the REST API (docs/api.md).
//
// No framework and no build step: `nimbus server` embeds this file as it is. The page is served
// with `Content-Security-Policy: default-src 'self'`, so there are no inline scripts, handlers or
// styles, and data from the API is only ever set as text (never parsed as HTML).
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "nimbus.token";
const NAMESPACE_KEY = "nimbus.namespace";

// === Session ===

// sessionStorage: the token lives as long as the tab, not on disk after it closes.
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function namespace() {
  return sessionStorage.getItem(NAMESPACE_KEY) || "default";
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  showSignIn(message);
}

// === API ===

// An error answered by the API: `{"error": {"code", "message", "field"}}`.
class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  describe() {
    return this.field ? `${this.message} (field: ${this.field})` : this.message;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `the server did not answer (${e.message})`, null);
  }
  const data = await readJson(response);
  if (response.ok) {
    return data;
  }
  if (response.status === 401) {
    signOut("Wrong token: the server refused it. Check DATA/admin.token.");
  }
  throw errorOf(response, data);
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function errorOf(response, data) {
  const e = data && data.error;
  if (e && typeof e.message === "string") {
    return new ApiError(response.status, e.code, e.message, e.field);
  }
  const detail = typeof data === "string" && data ? `: ${data.slice(0, 200)}` : "";
  return new ApiError(response.status, "http_error", `HTTP ${response.status}${detail}`, null);
}

// Path of a resource of the current namespace, with each name escaped.
function nsPath(...parts) {
  const names = [namespace(), ...parts].map(encodeURIComponent);
  return `/v1/namespaces/${names.join("/")}`;
}

function servicePath(service, ...rest) {
  return [nsPath("services", service), ...rest].join("/");
}

// === DOM helpers ===

const $ = (id) => document.getElementById(id);

// `el("a", {href: "#/x", "data-testid": "y"}, "text", child)`: properties where the element has
// one, attributes otherwise; strings become text nodes.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined) continue;
    if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

// Replaces a table body's rows; `emptyText` fills one row when there are none.
function fillRows(tbody, rows, emptyText) {
  if (rows.length === 0) {
    const columns = tbody.closest("table").querySelectorAll("thead th").length;
    rows = [el("tr", {}, el("td", { colSpan: columns, className: "empty" }, emptyText))];
  }
  tbody.replaceChildren(...rows);
}

function row(cells, props = {}) {
  return el("tr", props, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

function link(href, text, external = false) {
  return external ? el("a", { href, target: "_blank", rel: "noopener" }, text) : el("a", { href }, text);
}

function formatTime(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "";
}

function formatNumber(value, digits = 1) {
  return Number(value || 0).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes || 0);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${formatNumber(value)} ${units[unit]}`;
}

// Money is integer micro-units of the price sheet's currency.
function formatCost(bill) {
  if (!bill) return "";
  return `${(Number(bill.total || 0) / 1e6).toFixed(6)} ${bill.currency || ""}`.trim();
}

function trafficSummary(traffic) {
  return (traffic || []).map((t) => `${t.version} ${t.percent}%`).join(" · ") || "none";
}

// === Errors shown to the user ===

function describe(error) {
  return error instanceof ApiError ? error.describe() : error.message || String(error);
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401) return; // back at sign-in already
  show($("error-banner"), describe(error));
}

function clearError() {
  show($("error-banner"), "");
}

// === Refresh loop ===

// Bumped on every route change, so the loop of a view the user left stops by itself.
let viewGeneration = 0;
let refreshTimer = null;

function stopRefresh() {
  viewGeneration += 1;
  clearTimeout(refreshTimer);
}

// Calls `refresh` now and `REFRESH_MS` after each call ends (never two at once).
function refreshEvery(refresh) {
  const generation = viewGeneration;
  const tick = async () => {
    if (generation !== viewGeneration) return;
    await refresh();
    if (generation === viewGeneration) refreshTimer = setTimeout(tick, REFRESH_MS);
  };
  tick();
}

// Runs one refresh, showing its error in the banner instead of stopping the loop.
async function guarded(load) {
  try {
    await load();
    clearError();
  } catch (error) {
    reportError(error);
  }
}

// === Sign-in ===

function showSignIn(message) {
  $("app").hidden = true;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  show($("signin-error"), message || "");
  $("token").value = "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  try {
    await loadNamespaces(); // any authenticated call checks the token
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(describe(error));
    }
    return;
  }
  showApp();
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("nav").hidden = false;
  $("session").hidden = false;
  route();
}

// The namespace picker: filled from GET /v1/namespaces.
async function loadNamespaces() {
  const { namespaces } = await api("GET", "/v1/namespaces");
  const picker = $("namespace");
  const current = namespaces.includes(namespace()) ? namespace() : "default";
  picker.replaceChildren(...namespaces.map((n) => el("option", { value: n, selected: n === current }, n)));
  sessionStorage.setItem(NAMESPACE_KEY, current);
}

function changeNamespace() {
  sessionStorage.setItem(NAMESPACE_KEY, $("namespace").value);
  location.hash = "#/services";
  route();
}

// === Routing ===

const ROUTES = [
  [/^#\/services\/([^/]+)$/, (m) => showService(decodeURIComponent(m[1])), "services"],
  [/^#\/services$/, showServices, "services"],
  [/^#\/functions$/, showFunctions, "functions"],
  [/^#\/usage$/, showUsage, "usage"],
];

function route() {
  stopRefresh();
  if (!token()) {
    showSignIn();
    return;
  }
  clearError();
  for (const [pattern, view, section] of ROUTES) {
    const match = location.hash.match(pattern);
    if (match) {
      markNav(section);
      view(match);
      return;
    }
  }
  location.hash = "#/services"; // fires hashchange, which routes again
}

function markNav(section) {
  for (const a of $("nav").querySelectorAll("a")) {
    a.classList.toggle("active", a.dataset.view === section);
  }
}

// Puts a fresh copy of template `id` into #view.
function mountTemplate(id) {
  $("view").replaceChildren($(id).content.cloneNode(true));
}

// === Services ===

function showServices() {
  mountTemplate("view-services");
  refreshEvery(() => guarded(loadServices));
}

async function loadServices() {
  const [{ services }, { functions }] = await Promise.all([
    api("GET", nsPath("services")),
    api("GET", nsPath("functions")),
  ]);
  // A function is a service underneath; mark it so its row is not taken for a web app.
  const functionNames = new Set(functions.map((f) => f.name));
  const rows = services.map((s) =>
    row(
      [
        el(
          "td",
          {},
          link(`#/services/${encodeURIComponent(s.name)}`, s.name),
          functionNames.has(s.name) ? el("span", { className: "badge" }, "function") : null,
        ),
        link(s.url, s.url, true),
        trafficSummary(s.traffic),
        String(s.versions.length),
      ],
      { "data-testid": `service-row-${s.name}` },
    ),
  );
  fillRows($("services-rows"), rows, "No services yet: deploy one with `nimbus deploy NAME --command ...`.");
}

// === One service ===

// The traffic editor's state: rebuilt only when the set of versions changes, so a refresh never
// overwrites what the user is typing.
let editorVersions = "";

function showService(name) {
  mountTemplate("view-service");
  editorVersions = "";
  $("service-name").textContent = name;
  $("traffic-form").addEventListener("submit", (event) => saveSplit(event, name));
  $("traffic-inputs").addEventListener("input", updateTrafficTotal);
  $("logs-filter").addEventListener("input", renderLogs);
  $("deploy-form").addEventListener("submit", (event) => deployVersion(event, name));
  $("delete-service-form").addEventListener("submit", (event) => deleteService(event, name));
  refreshEvery(() => guarded(() => loadService(name)));
}

async function loadService(name) {
  const [service, { versions }, { events }, logs] = await Promise.all([
    api("GET", servicePath(name)),
    api("GET", servicePath(name, "versions")),
    api("GET", `${servicePath(name, "events")}?limit=50`),
    api("GET", `${servicePath(name, "logs")}?tail=100`),
  ]);
  const url = $("service-url");
  url.href = service.url;
  url.textContent = service.url;
  renderVersions(name, versions);
  renderDeployBase(versions);
  renderTrafficEditor(versions);
  renderEvents(events);
  logLines = logs.lines || [];
  renderLogs();
}

function renderVersions(service, versions) {
  const rows = versions.map((v) =>
    row(
      [
        v.name,
        statusCell(v),
        `${v.traffic}%${v.pending_traffic ? " (pending)" : ""}`,
        `${v.ready_instances} / ${v.desired_instances}`,
        v.scaling_reason || "",
        `${v.inflight} / ${v.queued}`,
        link(v.url, v.url, true),
        formatTime(v.created_at),
        el(
          "button",
          {
            type: "button",
            className: "secondary small",
            "data-testid": `delete-version-${v.name}`,
            onclick: () => deleteVersion(service, v.name),
          },
          "Delete",
        ),
      ],
      { "data-testid": `version-row-${v.name}` },
    ),
  );
  fillRows($("versions-rows"), rows, "No versions.");
}

// The status, with the reason of a failed version (its last log lines as a tooltip).
function statusCell(version) {
  const cell = el("td", { className: `status status-${version.status}` }, version.status);
  if (version.reason) {
    cell.append(el("div", { className: "reason", title: (version.last_log_lines || []).join("\n") }, version.reason));
  }
  return cell;
}

function renderTrafficEditor(versions) {
  const names = versions.map((v) => v.name).join(",");
  if (names === editorVersions) return;
  editorVersions = names;
  const inputs = versions.map((v) =>
    el(
      "label",
      { className: "traffic-input" },
      v.name,
      el("input", {
        type: "number",
        min: "0",
        max: "100",
        step: "1",
        value: String(v.traffic),
        "data-version": v.name,
        "data-testid": `traffic-${v.name}`,
      }),
      "%",
    ),
  );
  $("traffic-inputs").replaceChildren(...inputs);
  updateTrafficTotal();
}

// The split as typed: `[{version, percent}]`, leaving out versions at 0%.
function splitFromInputs() {
  const split = [];
  for (const input of $("traffic-inputs").querySelectorAll("input")) {
    const percent = Number(input.value || 0);
    if (!Number.isInteger(percent) || percent < 0) {
      throw new Error(`${input.dataset.version}: the percent must be a whole number from 0 to 100`);
    }
    if (percent > 0) split.push({ version: input.dataset.version, percent });
  }
  return split;
}

function updateTrafficTotal() {
  const total = [...$("traffic-inputs").querySelectorAll("input")].reduce((sum, i) => sum + Number(i.value || 0), 0);
  $("traffic-total").textContent = String(total);
  // A hint only: the API decides, and its message is what the user sees on Save.
  $("traffic-total").classList.toggle("off", total !== 100);
}

// PUT .../traffic with the typed split and the rules the service already has. The API checks
// the split (it must sum to 100) and changes nothing when it refuses; we show its message.
async function saveSplit(event, service) {
  event.preventDefault();
  show($("traffic-error"), "");
  show($("traffic-saved"), "");
  try {
    const split = splitFromInputs();
    const current = await api("GET", servicePath(service, "traffic"));
    const saved = await api("PUT", servicePath(service, "traffic"), { split, rules: current.rules || [] });
    show($("traffic-saved"), `Saved: ${trafficSummary(saved.traffic)}`);
  } catch (error) {
    show($("traffic-error"), describe(error));
  }
}

// DELETE one version; the API refuses (409) while it takes traffic, and says so.
async function deleteVersion(service, version) {
  show($("versions-error"), "");
  if (!window.confirm(`Delete version ${version} of ${service}? Its instances stop.`)) return;
  try {
    await api("DELETE", servicePath(service, "versions", encodeURIComponent(version)));
    await guarded(() => loadService(service));
  } catch (error) {
    show($("versions-error"), describe(error));
  }
}

// === Deploy a new version ===

// What the deploy form starts from: the newest version, shown as the inputs' placeholders.
function renderDeployBase(versions) {
  const newest = versions[versions.length - 1];
  if (!newest) {
    $("deploy-base").textContent = "none yet: give an image or a command";
    return;
  }
  const spec = newest.spec || {};
  const what = spec.image ? `image ${spec.image}` : `command ${spec.command || ""}`;
  $("deploy-base").textContent = `${newest.name}, ${what}`;
  $("deploy-image").placeholder = spec.image || "";
  $("deploy-command").placeholder = spec.command || "";
  $("deploy-min").placeholder = String(spec.min_instances ?? "");
  $("deploy-max").placeholder = String(spec.max_instances ?? "");
  $("deploy-concurrency").placeholder = String(spec.concurrency ?? "");
}

// The form as a `Deploy` body (docs/api.md) from the latest version: only the fields typed.
function deployFromForm() {
  const body = { from: "latest" };
  const text = (id) => $(id).value.trim();
  if (text("deploy-image")) body.image = text("deploy-image");
  if (text("deploy-command")) body.command = text("deploy-command");
  const env = {};
  text("deploy-env")
    .split("\n")
    .map((line) => line.trim())
    .forEach((line, index) => {
      if (!line) return;
      const equals = line.indexOf("=");
      if (equals < 1) {
        throw new Error(`Environment line ${index + 1} ("${line}"): write it as KEY=VALUE`);
      }
      env[line.slice(0, equals).trim()] = line.slice(equals + 1);
    });
  if (Object.keys(env).length) body.env = env;
  const remove = text("deploy-remove-env")
    .split("\n")
    .map((name) => name.trim())
    .filter(Boolean);
  if (remove.length) body.remove_env = remove;
  for (const [id, field] of [
    ["deploy-min", "min_instances"],
    ["deploy-max", "max_instances"],
    ["deploy-concurrency", "concurrency"],
  ]) {
    if (text(id) === "") continue;
    const value = Number(text(id));
    if (!Number.isInteger(value) || value < 0) {
      throw new Error(`${field}: a whole number, not "${text(id)}"`);
    }
    body[field] = value;
  }
  if ($("deploy-no-traffic").checked) body.no_traffic = true;
  return body;
}

// POST .../versions from the latest version; the API checks everything and stores nothing when
// it refuses, and its message (with the field) is what the user sees.
async function deployVersion(event, service) {
  event.preventDefault();
  show($("deploy-error"), "");
  show($("deploy-done"), "");
  try {
    const answer = await api("POST", servicePath(service, "versions"), deployFromForm());
    const v = answer.version;
    const traffic = v.pending_traffic ? " It takes all traffic once it is ready." : "";
    const what = answer.created === false ? `Updated ${v.name}'s scaling in place.` : `Deployed ${v.name}.${traffic}`;
    show($("deploy-done"), what);
    $("deploy-form").reset();
    await guarded(() => loadService(service));
  } catch (error) {
    show($("deploy-error"), describe(error));
  }
}

// === Delete the service ===

async function deleteService(event, service) {
  event.preventDefault();
  show($("delete-service-error"), "");
  if ($("delete-service-confirm").value.trim() !== service) {
    show($("delete-service-error"), `Type ${service} to confirm.`);
    return;
  }
  try {
    await api("DELETE", servicePath(service));
    location.hash = "#/services";
  } catch (error) {
    show($("delete-service-error"), describe(error));
  }
}

function renderEvents(events) {
  // The API lists the newest last; a timeline reads best newest first.
  const items = [...events].reverse().map((e) =>
    el(
      "li",
      { "data-kind": e.kind },
      el("time", {}, formatTime(e.at)),
      el("span", { className: "kind" }, e.kind),
      el("span", { className: "message" }, e.message),
    ),
  );
  $("events-list").replaceChildren(...(items.length ? items : [el("li", { className: "empty" }, "No events.")]));
}

let logLines = [];

function renderLogs() {
  const filter = $("logs-filter").value.trim().toLowerCase();
  const text = logLines
    .map((l) => `${l.version} ${l.instance}  ${l.line}`)
    .filter((line) => !filter || line.toLowerCase().includes(filter))
    .join("\n");
  $("logs-lines").textContent = text || (filter ? "No line matches the filter." : "No log lines yet.");
}

// === Functions ===

function showFunctions() {
  mountTemplate("view-functions");
  $("invoke-form").addEventListener("submit", invoke);
  guarded(loadFunctions);
}

async function loadFunctions() {
  const { functions } = await api("GET", nsPath("functions"));
  const rows = functions.map((f) =>
    row(
      [
        f.name,
        f.function.runtime,
        f.function.handler,
        `${f.function.memory_mb} MiB`,
        `${formatNumber(f.function.timeout_ms / 1000)} s`,
        String(f.versions.length),
        (f.aliases || []).map((a) => `${a.name}: ${trafficSummary(a.split)}`).join("; ") || "none",
        (f.triggers || []).map(describeTrigger).join("; ") || "none",
        el("button", { type: "button", className: "secondary", onclick: () => pickFunction(f.name) }, "Invoke…"),
      ],
      { "data-testid": `function-row-${f.name}` },
    ),
  );
  fillRows($("functions-rows"), rows, "No functions yet: deploy one with `nimbus fn deploy`.");
  $("invoke-function").replaceChildren(...functions.map((f) => el("option", { value: f.name }, f.name)));
}

// `timer 0 * * * *` or `bucket inbox: created under in/`.
function describeTrigger(t) {
  if (t.kind === "timer") return `timer ${t.cron}`;
  return `bucket ${t.bucket}: ${t.events}${t.prefix ? ` under ${t.prefix}` : ""}`;
}

function pickFunction(name) {
  $("invoke-function").value = name;
  $("invoke-payload").focus();
}

// POST .../invoke with the event typed in the box; shows the result or why it failed.
async function invoke(event) {
  event.preventDefault();
  show($("invoke-error"), "");
  show($("invoke-result"), "");
  const name = $("invoke-function").value;
  let payload;
  try {
    payload = JSON.parse($("invoke-payload").value || "null");
  } catch (e) {
    show($("invoke-error"), `The event is not valid JSON: ${e.message}`);
    return;
  }
  try {
    const answer = await api("POST", `${nsPath("functions", name)}/invoke`, payload);
    show($("invoke-result"), describeInvocation(answer));
  } catch (error) {
    show($("invoke-error"), describe(error));
  }
}

// A handler's own failure is a 200 answer with `error` (kind, type, message, traceback).
function describeInvocation(answer) {
  const head = `version ${answer.version}, ${formatNumber(answer.duration_ms)} ms, request ${answer.request_id}`;
  if (answer.error) {
    const e = answer.error;
    const traceback = Array.isArray(e.traceback) ? e.traceback.join("\n") : e.traceback || "";
    return `${head}\n${e.kind} error: ${e.type || ""}: ${e.message || ""}\n${traceback}`.trim();
  }
  return `${head}\n${JSON.stringify(answer.result, null, 2)}`;
}

// === Usage ===

function showUsage() {
  mountTemplate("view-usage");
  $("usage-since").addEventListener("change", () => guarded(loadUsage));
  guarded(loadUsage);
}

async function loadUsage() {
  const since = encodeURIComponent($("usage-since").value);
  const ns = encodeURIComponent(namespace());
  const usage = await api("GET", `/v1/usage?by=service&since=${since}&namespace=${ns}`);
  const rows = usage.groups.map((g) =>
    row(usageCells(g.service, g.usage, g.cost), { "data-testid": `usage-row-${g.service}` }),
  );
  fillRows($("usage-rows"), rows, "No usage in this window.");
  $("usage-total").replaceChildren(row(usageCells("Total", usage.total.usage, usage.total.cost)));
}

function usageCells(label, usage, cost) {
  return [
    label,
    formatNumber(usage.requests, 0),
    formatNumber(usage.cpu_seconds, 2),
    formatNumber(usage.memory_allocated_gb_seconds, 2),
    formatNumber(usage.instance_seconds, 0),
    formatBytes(usage.egress_bytes),
    formatCost(cost),
  ];
}

// === Start ===

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("namespace").addEventListener("change", changeNamespace);
  window.addEventListener("hashchange", route);
  if (!token()) {
    showSignIn();
    return;
  }
  // A token from earlier in this tab: check it is still good before showing data.
  loadNamespaces()
    .then(showApp)
    .catch((error) => {
      if (!(error instanceof ApiError && error.status === 401)) showSignIn(describe(error));
    });
});
