// The "What self-hosting saved" panel: /admin/savings (the report of `hearth usage --savings`)
// for the chosen grouping and period: totals, a row per model, key or team, a row per machine.

import { getJSON } from "./api.js";
import { fillTable, fmtNumber } from "./dom.js";

let available = true;

function dollars(value) {
  if (value === null || value === undefined) return "–";
  const text = `$${Math.abs(value).toFixed(Math.abs(value) >= 100 ? 0 : 4)}`;
  return value < 0 ? `-${text}` : text;
}

function sum(rows, field) {
  return rows.reduce((total, row) => total + (row[field] || 0), 0);
}

function show(report) {
  const by = report.by;
  const rows = report.data;
  const ref = report.reference;
  document.getElementById("savings-by-head").textContent = by;
  document.getElementById("savings-note").textContent =
    `against ${ref.model} ($${ref.input} in / $${ref.output} out per 1M tokens; prices ${ref.prices_version})`;
  document.getElementById("fig-saved").textContent = dollars(sum(rows, "saving"));
  document.getElementById("fig-local-tokens").textContent = fmtNumber(sum(rows, "local_tokens"), 1);
  document.getElementById("fig-local-cost").textContent = dollars(sum(rows, "local_cost"));
  document.getElementById("fig-cloud-cost").textContent = dollars(sum(rows, "cloud_cost"));
  fillTable(
    document.getElementById("savings"),
    rows,
    (row) => [
      row[by] === null || row[by] === undefined ? `(no ${by})` : String(row[by]),
      fmtNumber(row.local_tokens, 1),
      dollars(row.local_cost),
      dollars(row.cloud_cost),
      dollars(row.saving),
    ],
    "no tokens served by local models in this period",
    (row) => String(row[by] ?? ""),
  );
  fillTable(
    document.getElementById("savings-machines"),
    report.machines,
    (m) => [
      m.machine,
      dollars(m.cost_per_hour),
      m.tokens_per_hour === null ? "not measured yet" : fmtNumber(m.tokens_per_hour, 1),
      dollars(m.cost_per_million),
      dollars(m.saved_to_date),
      dollars(m.saved_per_day),
      m.hardware_price === null ? "–" : dollars(m.hardware_price),
      m.break_even === null ? "–" : m.break_even,
    ],
    "no machine costs set (savings.machines): local cost is the models' own price",
    (m) => m.machine,
  );
}

export async function refreshSavings() {
  if (!available) return;
  const by = document.getElementById("savings-by").value;
  const since = document.getElementById("savings-period").value;
  const note = document.getElementById("savings-note");
  try {
    show(await getJSON(`/admin/savings?by=${by}&since=${since}`));
  } catch (error) {
    if (error.status === 404) {
      available = false;
      note.textContent = "Savings are not available on this server.";
    } else {
      note.textContent = `Savings are not available: ${error.message}`;
    }
  }
}

export function startSavings() {
  for (const id of ["savings-by", "savings-period"]) {
    document.getElementById(id).addEventListener("change", refreshSavings);
  }
}
