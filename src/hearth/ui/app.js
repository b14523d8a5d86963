// Hearth dashboard: polls the admin JSON endpoints every 2 s and shows live figures, charts,
// models, deployments and usage; the playground lives in playground.js. Plain modern JavaScript
// modules, no build step.

import { askForKey, call, getJSON } from "./api.js";
import { LineChart } from "./chart.js";
import { badge, el, fillTable, fmtBytes, fmtCell, fmtNumber, fmtSeconds } from "./dom.js";
import { startPlayground, updateModelChoices } from "./playground.js";
import { refreshSavings, startSavings } from "./savings.js";

const POLL_MS = 2000;

// ---- live figures ------------------------------------------------------------------------------

const rpsChart = new LineChart(document.getElementById("chart-rps"), [
  { name: "requests/s", color: "#d9541e" },
]);
const tpsChart = new LineChart(document.getElementById("chart-tps"), [
  { name: "out", color: "#d9541e" },
  { name: "in", color: "#2f6db5" },
]);
let previous = null;

const LATENCY_ROWS = [
  ["request_duration", "request (whole answer)"],
  ["time_to_first_token", "time to first token"],
  ["time_per_output_token", "time per output token"],
  ["gateway_overhead", "gateway overhead"],
];

function rate(now, before, field, seconds) {
  const delta = now[field] - before[field];
  return delta > 0 ? delta / seconds : 0; // a negative delta is a restarted server
}

function showStats(stats) {
  if (previous !== null && stats.time > previous.time) {
    const seconds = stats.time - previous.time;
    const rps = rate(stats, previous, "requests", seconds);
    const tpsOut = rate(stats, previous, "tokens_out", seconds);
    const tpsIn = rate(stats, previous, "tokens_in", seconds);
    rpsChart.push(stats.time, [rps]);
    tpsChart.push(stats.time, [tpsOut, tpsIn]);
    document.getElementById("fig-rps").textContent = fmtNumber(rps, 2);
    document.getElementById("fig-tps").textContent = fmtNumber(tpsOut, 1);
  }
  previous = stats;
  document.getElementById("fig-inflight").textContent = fmtNumber(stats.in_flight, 0);
  document.getElementById("fig-requests").textContent = fmtNumber(stats.requests, 0);
  document.getElementById("fig-errors").textContent = fmtNumber(stats.errors, 0);
  document.getElementById("fig-tokens").textContent =
    `${fmtNumber(stats.tokens_in, 0)} / ${fmtNumber(stats.tokens_out, 0)}`;
  // The last few minutes once the server has been up longer than that; else since start.
  const latency = stats.recent ? stats.recent.latency : stats.latency;
  document.getElementById("latency-span").textContent = stats.recent
    ? `percentiles over the last ${Math.round(stats.recent.seconds / 60)} min, from the histograms`
    : "percentiles since start, from the histograms";
  const rows = LATENCY_ROWS.map(([key, label]) => ({ label, ...latency[key] }));
  fillTable(document.getElementById("latency"), rows, (row) => [
    row.label,
    fmtNumber(row.count, 0),
    fmtSeconds(row.p50),
    fmtSeconds(row.p95),
    fmtSeconds(row.p99),
    fmtSeconds(row.mean),
  ]);
}

// ---- models and deployments --------------------------------------------------------------------

function showModels(models, deployments) {
  const byName = new Map(deployments.map((d) => [d.name, d]));
  const rows = models.filter((m) => !m.alias_of);
  let loaded = 0;
  let memory = 0;
  fillTable(
    document.getElementById("models"),
    rows,
    (model) => {
      const local = byName.get(model.id);
      const engine = local && local.kind === "local" ? local.engine : null;
      if (engine) {
        loaded += 1;
        memory += local.memory_bytes || 0;
      }
      const kind = model.state === "remote" ? (model.deployments.length > 1 || !byName.has(model.id) ? "route" : "remote") : model.state;
      const servedBy = model.deployments ? `${model.strategy}: ${model.deployments.join(", ")}` : "local engine";
      let action = "";
      if (engine) {
        action = el("button", "unload", { class: "quiet", type: "button" });
        action.addEventListener("click", () => unload(model.id, action));
      }
      return [
        model.id,
        badge(kind),
        local && local.kind === "local" ? fmtBytes(local.memory_bytes) : "–",
        engine ? `${engine.slots_busy} / ${engine.slots}` : "–",
        engine ? String(engine.queued) : "–",
        engine && engine.idle_for_s !== null ? fmtSeconds(engine.idle_for_s) : "–",
        engine && engine.expires_in_s !== null ? fmtSeconds(engine.expires_in_s) : "–",
        servedBy,
        action,
      ];
    },
    "no models",
    (model) => model.id,
  );
  document.getElementById("models-summary").textContent =
    `${rows.length} servable · ${loaded} loaded · ${fmtBytes(memory)} in use`;
}

async function unload(name, button) {
  button.disabled = true;
  await call(`/admin/models/${encodeURIComponent(name)}/unload`, { method: "POST" });
  refresh();
}

function showDeployments(deployments) {
  fillTable(
    document.getElementById("deployments"),
    deployments,
    (d) => {
      const breaker = badge(d.breaker);
      if (d.breaker !== "closed" && d.breaker_retry_after_s > 0) {
        breaker.title = `trial request in ${d.breaker_retry_after_s} s`;
      }
      return [
        d.name,
        d.kind,
        d.kind === "remote" ? `${d.url} (${d.model})` : d.state,
        breaker,
        d.capacity ? `${d.in_flight} / ${d.capacity}` : String(d.in_flight),
        d.ttft_avg_ms === null ? "–" : `${fmtNumber(d.ttft_avg_ms, 0)} ms`,
        `${d.price.input} / ${d.price.output}`,
      ];
    },
    "no deployments",
    (d) => d.name,
  );
}

// ---- usage -------------------------------------------------------------------------------------

let usageAvailable = true;

function usageRows(answer) {
  if (Array.isArray(answer)) return answer;
  for (const field of ["data", "rows", "usage"]) {
    if (Array.isArray(answer[field])) return answer[field];
  }
  return [];
}

// Whatever columns /admin/usage gives; the grouping column first, its empty value named.
function showUsageTable(table, rows, by) {
  const columns = [by, ...new Set(rows.flatMap((row) => Object.keys(row)))].filter(
    (column, i, all) => all.indexOf(column) === i,
  );
  table.tHead.replaceChildren();
  const head = table.tHead.appendChild(el("tr"));
  for (const column of columns) head.append(el("th", column.replaceAll("_", " ")));
  const cell = (row, column) =>
    column === by && (row[column] === null || row[column] === undefined || row[column] === "")
      ? `(no ${by})`
      : column.includes("cost") && typeof row[column] === "number"
        ? `$${row[column].toFixed(4)}`
        : fmtCell(row[column]);
  fillTable(
    table,
    rows,
    (row) => columns.map((c) => cell(row, c)),
    "no requests in this period",
    (row) => String(row[by] ?? ""),
  );
}

async function refreshUsage() {
  if (!usageAvailable) return;
  const note = document.getElementById("usage-note");
  const since = document.getElementById("usage-period").value;
  try {
    const [byKey, byModel] = await Promise.all([
      getJSON(`/admin/usage?by=key&since=${since}`),
      getJSON(`/admin/usage?by=model&since=${since}`),
    ]);
    showUsageTable(document.getElementById("usage-key"), usageRows(byKey), "key");
    showUsageTable(document.getElementById("usage-model"), usageRows(byModel), "model");
    note.textContent = "";
  } catch (error) {
    if (error.status === 404) {
      usageAvailable = false;
      note.textContent = "Usage accounting is not available on this server.";
      document.querySelector("#usage-panel .usage-tables").hidden = true;
      document.getElementById("usage-period").disabled = true;
    } else {
      note.textContent = `Usage is not available: ${error.message}`;
    }
  }
}

// ---- polling -----------------------------------------------------------------------------------

function setConnection(state) {
  const node = document.getElementById("connection");
  node.dataset.state = state;
  node.textContent = state;
}

let polls = 0;

async function refresh() {
  try {
    const [stats, deployments, models] = await Promise.all([
      getJSON("/admin/stats"),
      getJSON("/admin/deployments"),
      getJSON("/v1/models"),
    ]);
    showStats(stats);
    showDeployments(deployments.data);
    showModels(models.data, deployments.data);
    updateModelChoices(models.data);
    setConnection("online");
  } catch (error) {
    setConnection(error.status === 401 ? "key needed" : "offline");
  }
  // Usage changes slowly: every 15th poll (30 s), and when the period changes.
  if (polls % 15 === 0) {
    refreshUsage();
    refreshSavings();
  }
  polls += 1;
}

// ---- start -------------------------------------------------------------------------------------

async function start() {
  startPlayground();
  startSavings();
  document.getElementById("key-button").addEventListener("click", async () => {
    if (await askForKey(true)) refresh();
  });
  document.getElementById("usage-period").addEventListener("change", refreshUsage);
  for (const chart of [rpsChart, tpsChart]) chart.draw();
  window.addEventListener("resize", () => [rpsChart, tpsChart].forEach((c) => c.draw()));
  fetch("/health")
    .then((r) => r.json())
    .then((h) => {
      document.getElementById("version").textContent = `v${h.version}`;
    })
    .catch(() => {});
  await refresh();
  setInterval(refresh, POLL_MS);
}

start();
