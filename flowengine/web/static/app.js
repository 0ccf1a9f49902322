// The web UI: run a workflow and watch it, the runs so far, statistics across runs.
//
// Model output is data: it only ever reaches the page through textContent or text nodes. A
// finished run is shown by the page `flowengine report` writes (GET /runs/<id>, rendered and
// escaped by the server), in a frame whose sandbox allows no script at all.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { workflows: new Map(), graph: null, run: null };

// --- the API ----------------------------------------------------------------------------------

function authorization() {
  const key = sessionStorage.getItem("flowengine.key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// A response of the server; an Error with the server's message when it is not a success.
async function api(path, options = {}) {
  const headers = { ...authorization(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  if (response.status === 401) $("#key-form").hidden = false;
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  throw new Error(message);
}

const getJson = async (path) => (await api(path)).json();

// A run's server-sent events, each handed to onEvent(kind, data), until its `end`. Read with
// fetch rather than EventSource, which cannot send the Authorization header a key needs; a
// dropped stream is taken up again after the last event seen, as EventSource would.
async function follow(url, onEvent) {
  let last = "";
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      const response = await api(url, { headers: last ? { "Last-Event-ID": last } : {} });
      if (response.status === 204) return;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          last = event.id;
          onEvent(event.kind, event.data);
          if (event.kind === "end") return;
        }
      }
    } catch (error) {
      if (attempt === 4) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error("the run's event stream kept breaking off");
}

function parseEvent(block) {
  const fields = {};
  for (const line of block.split("\n")) {
    const colon = line.indexOf(": ");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 2);
  }
  if (!("data" in fields)) return null; // a keep-alive comment
  return { id: fields.id || "", kind: fields.event || "message", data: JSON.parse(fields.data) };
}

// --- figures ----------------------------------------------------------------------------------

const seconds = (s) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
const money = (usd) => `$${usd.toFixed(6)}`;
const percent = (share) => `${Math.round(share * 100)}%`;
const whole = (n) => String(n);

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function showProblem(error) {
  const problem = $("#problem");
  problem.textContent = error ? String(error.message || error) : "";
  problem.hidden = !error;
}

// --- the run page -----------------------------------------------------------------------------

async function loadWorkflows() {
  const data = await getJson("/api/workflows");
  const select = $("#workflow");
  select.replaceChildren();
  for (const workflow of data.workflows) {
    state.workflows.set(workflow.name, workflow);
    const option = document.createElement("option");
    option.value = option.textContent = workflow.name;
    select.append(option);
  }
  chooseWorkflow();
}

function chooseWorkflow() {
  const workflow = state.workflows.get($("#workflow").value);
  if (!workflow) return;
  $("#description").textContent = workflow.description || "";
  $("#inputs").replaceChildren(...workflow.inputs.map(inputField));
  drawGraph(workflow);
}

// The workflow's graph, every node pending.
function drawGraph(workflow) {
  state.graph = new LiveGraph(workflow.nodes);
  $("#graph-live").replaceChildren(state.graph.svg);
}

// A form field for one input: text, a number, a checkbox, or JSON for objects and arrays.
function inputField(input) {
  const label = document.createElement("label");
  label.className = "input";
  const name = document.createElement("span");
  name.textContent = input.name + (input.required ? "" : " (optional)");
  let control;
  if (input.type === "boolean") {
    control = document.createElement("input");
    control.type = "checkbox";
    control.checked = input.default === true;
  } else if (input.type === "integer" || input.type === "number") {
    control = document.createElement("input");
    control.type = "number";
    control.step = input.type === "integer" ? "1" : "any";
  } else {
    control = document.createElement("textarea");
    control.rows = input.name === "prompt" ? 4 : 2;
  }
  control.name = input.name;
  control.dataset.type = input.type;
  control.required = input.required && input.type !== "boolean";
  if (input.default !== null && input.type !== "boolean") {
    control.placeholder = typeof input.default === "string" ? input.default : JSON.stringify(input.default);
  }
  const help = document.createElement("small");
  help.textContent = input.description || input.type;
  label.append(name, control, help);
  return label;
}

// The inputs the form holds; an optional field left empty is left out, for its default.
function formInputs() {
  const inputs = {};
  for (const control of $("#inputs").querySelectorAll("[name]")) {
    const type = control.dataset.type;
    if (type === "boolean") inputs[control.name] = control.checked;
    else if (control.value === "") continue;
    else if (type === "integer" || type === "number") inputs[control.name] = Number(control.value);
    else if (type === "object" || type === "array") {
      try {
        inputs[control.name] = JSON.parse(control.value);
      } catch (_) {
        throw new Error(`input '${control.name}' should be JSON (an ${type})`);
      }
    } else inputs[control.name] = control.value;
  }
  return inputs;
}

async function startRun(event) {
  event.preventDefault();
  showProblem(null);
  const workflow = $("#workflow").value;
  const body = JSON.stringify({ workflow, inputs: formInputs() });
  const started = await (await api("/api/runs", {
    method: "POST", headers: { "Content-Type": "application/json" }, body,
  })).json();
  state.run = started.run_id;
  drawGraph(state.workflows.get(workflow));
  $("#live").hidden = false;
  $("#run-id").textContent = started.run_id;
  setStatus("running");
  $("#answer").replaceChildren();
  $("#run-error").hidden = true;
  $("#run-report").hidden = true;
  $("#start").disabled = true;
  try {
    await follow(started.events, onRunEvent);
    await showFinished(started.run_id);
  } finally {
    $("#start").disabled = false;
  }
}

function setStatus(status) {
  const badge = $("#run-status");
  badge.textContent = status;
  badge.className = `status ${status}`;
}

function onRunEvent(kind, data) {
  if (kind === "token") {
    $("#answer").append(document.createTextNode(data.text));
  } else if (kind === "call_started") {
    state.graph.addCall(data.node);
  } else if (kind.startsWith("node_")) {
    const phase = kind.slice("node_".length);
    const status = phase === "started" ? "running" : data.status || phase;
    state.graph.setState(data.node, status, data.error ? data.error.message : data.reason);
  } else if (kind === "end") {
    setStatus(data.status);
    if (data.error) {
      $("#run-error").textContent = `${data.error.type}: ${data.error.message}`;
      $("#run-error").hidden = false;
    }
  }
}

async function showFinished(runId) {
  const run = await getJson(`/api/runs/${encodeURIComponent(runId)}`);
  const answer = $("#answer");
  if (!answer.textContent && run.result && run.result.output !== null) {
    const output = run.result.output;
    answer.textContent = typeof output === "string" ? output : JSON.stringify(output, null, 2);
  }
  await showReport($("#run-report"), runId);
}

// The report of a finished run, in its frame: a sandbox with no script, sized to its page.
async function showReport(frame, runId) {
  let page;
  try {
    page = await (await api(`/runs/${encodeURIComponent(runId)}`)).text();
  } catch (error) {
    frame.hidden = true;
    showProblem(`No report of run ${runId}: ${error.message}`);
    return;
  }
  frame.onload = () => {
    frame.style.height = `${frame.contentDocument.documentElement.scrollHeight + 24}px`;
  };
  frame.dataset.run = runId;
  frame.srcdoc = page;
  frame.hidden = false;
}

// --- history and statistics -------------------------------------------------------------------

async function showHistory(runId) {
  const data = await getJson("/api/runs?limit=100");
  const rows = data.runs.map((run) => {
    const row = document.createElement("tr");
    row.dataset.run = run.run_id;
    const when = run.started_at.replace("T", " ").slice(0, 19);
    const started = cell(run.status === "running" ? when : "");
    if (run.status !== "running") { // a running run has no report yet
      const link = document.createElement("a");
      link.href = `#history/${run.run_id}`;
      link.textContent = when;
      started.append(link);
    }
    const status = cell("");
    const badge = document.createElement("span");
    badge.className = `status ${run.status}`;
    badge.textContent = run.status;
    status.append(badge);
    row.append(started, cell(run.workflow), status,
      cell(run.total_time === null ? "–" : seconds(run.total_time)),
      cell(run.calls === null ? "–" : String(run.calls)),
      cell(run.cost === null ? "–" : money(run.cost)));
    row.classList.toggle("chosen", run.run_id === runId);
    return row;
  });
  $("#runs tbody").replaceChildren(...rows);
  const frame = $("#history-report");
  if (runId) await showReport(frame, runId);
  else frame.hidden = true;
}

const CHARTS = [
  ["calls", "Calls", whole],
  ["success_rate", "Success rate", percent],
  ["latency_p50_s", "Latency p50", seconds],
  ["latency_p95_s", "Latency p95", seconds],
  ["tokens", "Tokens", whole],
  ["cost", "Cost (USD)", money],
  ["quality", "Quality (judged answers)", percent],
];

async function showStats() {
  const data = await getJson("/api/stats?limit=100");
  const models = Object.entries(data.models);
  $("#stats-note").textContent = models.length
    ? `Per model, over the calls of the newest ${data.runs} stored run${data.runs === 1 ? "" : "s"}.`
    : "No stored run has made a call yet.";
  $("#charts").replaceChildren(...(models.length ? CHARTS : []).map(([field, title, format]) =>
    barChart(title, models.map(([alias, figures]) => [alias, figures[field]]), format)));
}

// --- pages ------------------------------------------------------------------------------------

async function route() {
  const [page, runId] = (location.hash.slice(1) || "run").split("/");
  const shown = ["run", "history", "stats"].includes(page) ? page : "run";
  for (const section of document.querySelectorAll("section.page")) section.hidden = section.id !== shown;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.page === shown);
  }
  showProblem(null);
  if (shown === "history") await showHistory(runId ? decodeURIComponent(runId) : null);
  if (shown === "stats") await showStats();
}

function guarded(work) {
  return (...args) => work(...args).catch(showProblem);
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("flowengine.key", $("#key").value);
  $("#key-form").hidden = true;
  guarded(loadWorkflows)().then(guarded(route));
});
$("#workflow").addEventListener("change", chooseWorkflow);
$("#run-form").addEventListener("submit", guarded(startRun));
window.addEventListener("hashchange", guarded(route));
guarded(loadWorkflows)();
guarded(route)();
