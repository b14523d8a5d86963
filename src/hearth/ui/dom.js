// Formatting figures, and building the page's elements: always with textContent, never as HTML,
// since names and texts come from the server.

export function fmtNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1e6) return `${(value / 1e6).toFixed(digits)}M`;
  if (Math.abs(value) >= 1e4) return `${(value / 1e3).toFixed(digits)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${Math.round(seconds / 60)} min`;
}

export function fmtBytes(bytes) {
  if (!bytes) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function fmtCell(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return fmtNumber(value, Number.isInteger(value) ? 0 : 2);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

export function badge(state) {
  return el("span", state.replaceAll("_", " "), { class: "badge", "data-state": state });
}

// Replace a table body's rows; `cells` gives each row's cells as text or DOM nodes, `name` the
// row's data-name.
export function fillTable(table, rows, cells, empty, name = null) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const columns = table.tHead.rows[0] ? table.tHead.rows[0].cells.length : 1;
    body.append(el("tr")).append(el("td", empty, { class: "empty", colspan: String(columns) }));
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    if (name) tr.dataset.name = name(row);
    for (const cell of cells(row)) {
      const td = el("td");
      td.append(cell instanceof Node ? cell : document.createTextNode(cell));
      tr.append(td);
    }
    body.append(tr);
  }
}
