// A small line chart on a canvas, drawn by hand: the dashboard needs no chart library.

import { fmtNumber } from "./dom.js";

const HISTORY = 150; // points kept per chart: 5 minutes at one poll every 2 s

// A line chart on a canvas: time on x (the last HISTORY points), one line per series.
// The canvas carries data-points (points drawn) and data-peak (highest value) for tests and tools.
export class LineChart {
  constructor(canvas, series) {
    this.canvas = canvas;
    this.series = series; // [{name, color}]
    this.points = []; // [{t, values: [..]}]
  }

  push(t, values) {
    this.points.push({ t, values });
    if (this.points.length > HISTORY) this.points.shift();
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const pad = { left: 44, right: 8, top: 8, bottom: 18 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const peak = Math.max(0, ...this.points.flatMap((p) => p.values));
    const top = niceCeiling(peak);
    const ticks = gridLines(top);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#77716a";
    ctx.strokeStyle = "#ece8e2";
    ctx.lineWidth = 1;
    for (let i = 0; i <= ticks; i += 1) {
      const y = pad.top + plotH - (plotH * i) / ticks;
      ctx.beginPath();
      ctx.moveTo(pad.left, y + 0.5);
      ctx.lineTo(width - pad.right, y + 0.5);
      ctx.stroke();
      ctx.fillText(fmtNumber(Number(((top * i) / ticks).toPrecision(3))), 4, y + 4);
    }
    ctx.fillText("−5 min", pad.left, height - 4);
    ctx.fillText("now", width - pad.right - 20, height - 4);

    const x = (index) => pad.left + (plotW * (HISTORY - this.points.length + index)) / (HISTORY - 1);
    const y = (value) => pad.top + plotH - (plotH * value) / top;
    this.series.forEach((series, s) => {
      ctx.strokeStyle = series.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      this.points.forEach((point, i) => {
        if (i === 0) ctx.moveTo(x(i), y(point.values[s]));
        else ctx.lineTo(x(i), y(point.values[s]));
      });
      ctx.stroke();
    });
    canvas.dataset.points = String(this.points.length);
    canvas.dataset.peak = String(peak);
  }
}

// Grid lines that fall on round values: 2.5 → 0.5 apart, 2 → 0.5, 1 → 0.2, 5 → 1.
function gridLines(top) {
  const mantissa = top / 10 ** Math.floor(Math.log10(top));
  return Math.abs(mantissa - 2) < 1e-9 ? 4 : 5;
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}
