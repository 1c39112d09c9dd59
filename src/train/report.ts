/**
 * The training report: one self-contained HTML page (inline SVG, no scripts,
 * no network) with the training loss per task, eval AUC per task, the ROC
 * curve of each task and the mean gate weight per task and expert, the
 * question MMoE users ask most: which experts does each task use?
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderReport } from "./report.ts";
 * const html = renderReport({
 *   title: "demo",
 *   logs: [{ step: 1, losses: { binary_cross_entropy_ctr: 0.7 } }, { step: 2, losses: { binary_cross_entropy_ctr: 0.6 } }],
 *   evals: [{ step: 2, metrics: { auc_ctr: 0.7 } }],
 *   rocs: { ctr: { fpr: Float32Array.of(0, 0.5, 1), tpr: Float32Array.of(0, 0.8, 1) } },
 *   gates: { towers: ["ctr"], experts: 2, mean: [[0.3, 0.7]] },
 * });
 * assert.ok(html.startsWith("<!doctype html>"));
 * assert.ok(html.includes("<svg") && html.includes("ctr"));
 * ```
 * @module
 */

/** What the report shows. */
export interface ReportData {
  /** Page title (e.g. the model dir). */
  title: string;
  /** Training log points: loss per name at a step. */
  logs: { step: number; losses: Record<string, number> }[];
  /** Eval results at a step (metric name -> value). */
  evals: { step: number; metrics: Record<string, number> }[];
  /** ROC curve per tower (FPR/TPR pairs, any order of points along the curve). */
  rocs: Record<string, { fpr: ArrayLike<number>; tpr: ArrayLike<number> }>;
  /** Mean gate weight per tower (row) and expert (column) over the eval set. */
  gates: { towers: string[]; experts: number; mean: number[][] } | null;
  /** Extra key/value lines shown in a table (oracle AUC, samples/s, ...). */
  notes?: Record<string, string>;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
const W = 420, H = 260, PAD = { left: 52, right: 12, top: 24, bottom: 36 };

function escape(text: string): string {
  return text.replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!,
  );
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
  const mult = [1, 2, 5, 10].find((m) => (hi - lo) / (step * m) <= count) ?? 10;
  const s = step * mult;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-12; v += s) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

/** A line chart of named series of (x, y) points as an SVG string. */
function lineChart(
  title: string,
  series: { name: string; points: [number, number][] }[],
  options: { xLabel: string; yRange?: [number, number]; square?: boolean } = { xLabel: "" },
): string {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<p>${escape(title)}: no data</p>`;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = options.yRange ?? [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const width = options.square ? H + PAD.left - PAD.bottom + PAD.right : W;
  const sx = (x: number) => PAD.left + ((x - x0) / (x1 - x0)) * (width - PAD.left - PAD.right);
  const sy = (y: number) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${H}" viewBox="0 0 ${width} ${H}" font-family="sans-serif" font-size="11">`,
    `<text x="${width / 2}" y="14" text-anchor="middle" font-weight="bold">${escape(title)}</text>`,
  ];
  for (const t of niceTicks(y0, y1)) {
    parts.push(
      `<line x1="${PAD.left}" x2="${width - PAD.right}" y1="${sy(t)}" y2="${
        sy(t)
      }" stroke="#eee"/>`,
      `<text x="${PAD.left - 4}" y="${sy(t) + 4}" text-anchor="end">${t}</text>`,
    );
  }
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<text x="${sx(t)}" y="${H - PAD.bottom + 14}" text-anchor="middle">${t}</text>`);
  }
  parts.push(
    `<rect x="${PAD.left}" y="${PAD.top}" width="${width - PAD.left - PAD.right}" height="${
      H - PAD.top - PAD.bottom
    }" fill="none" stroke="#999"/>`,
    `<text x="${(PAD.left + width - PAD.right) / 2}" y="${H - 6}" text-anchor="middle">${
      escape(options.xLabel)
    }</text>`,
  );
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map(([x, y], j) =>
      `${j === 0 ? "M" : "L"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`
    ).join("");
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    if (s.points.length === 1) {
      const [x, y] = s.points[0];
      parts.push(`<circle cx="${sx(x)}" cy="${sy(y)}" r="3" fill="${color}"/>`);
    }
    parts.push(
      `<text x="${PAD.left + 8}" y="${PAD.top + 14 + 13 * i}" fill="${color}">${
        escape(s.name)
      }</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("");
}

/** Horizontal bars of named values in [0, 1] (e.g. AUCs from one evaluation). */
function barChart(title: string, bars: { name: string; value: number }[]): string {
  const left = 150, barH = 22, width = W, height = PAD.top + 16 + bars.length * (barH + 8) + 10;
  const scale = (v: number) => Math.max(0, Math.min(1, v)) * (width - left - 60);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${width / 2}" y="14" text-anchor="middle" font-weight="bold">${escape(title)}</text>`,
  ];
  bars.forEach(({ name, value }, i) => {
    const y = PAD.top + 8 + i * (barH + 8);
    parts.push(
      `<text x="${left - 6}" y="${y + barH / 2 + 4}" text-anchor="end">${escape(name)}</text>`,
      `<rect x="${left}" y="${y}" width="${scale(value).toFixed(1)}" height="${barH}" fill="${
        COLORS[i % COLORS.length]
      }"/>`,
      `<text x="${left + scale(value) + 4}" y="${y + barH / 2 + 4}">${value.toFixed(4)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("");
}

/** A heatmap of gate weights: rows are towers, columns experts. */
function gateHeatmap(gates: NonNullable<ReportData["gates"]>): string {
  const cell = 56, left = 70, top = 40;
  const width = left + cell * gates.experts + 20, height = top + cell * gates.towers.length + 20;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${
      width / 2
    }" y="14" text-anchor="middle" font-weight="bold">Mean gate weight (task x expert)</text>`,
  ];
  for (let e = 0; e < gates.experts; e++) {
    parts.push(
      `<text x="${left + cell * e + cell / 2}" y="${
        top - 6
      }" text-anchor="middle">expert ${e}</text>`,
    );
  }
  gates.towers.forEach((tower, t) => {
    parts.push(
      `<text x="${left - 6}" y="${top + cell * t + cell / 2 + 4}" text-anchor="end">${
        escape(tower)
      }</text>`,
    );
    for (let e = 0; e < gates.experts; e++) {
      const v = gates.mean[t][e];
      const shade = Math.round(255 - 200 * Math.max(0, Math.min(1, v)));
      parts.push(
        `<rect x="${left + cell * e}" y="${top + cell * t}" width="${cell - 2}" height="${
          cell - 2
        }" fill="rgb(${shade},${shade},255)"/>`,
        `<text x="${left + cell * e + cell / 2 - 1}" y="${
          top + cell * t + cell / 2 + 4
        }" text-anchor="middle">${v.toFixed(3)}</text>`,
      );
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

/**
 * Renders the report page.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderReport } from "./report.ts";
 * const html = renderReport({ title: "t", logs: [], evals: [], rocs: {}, gates: null });
 * assert.ok(html.includes("no data"));
 * ```
 */
export function renderReport(data: ReportData): string {
  const lossNames = [...new Set(data.logs.flatMap((l) => Object.keys(l.losses)))];
  const loss = lineChart(
    "Training loss",
    lossNames.map((name) => ({
      name,
      points: data.logs.filter((l) => name in l.losses).map((l) => [l.step, l.losses[name]]),
    })),
    { xLabel: "step" },
  );
  const aucNames = [...new Set(data.evals.flatMap((e) => Object.keys(e.metrics)))].filter((n) =>
    n.includes("auc")
  );
  const evalSteps = new Set(data.evals.map((e) => e.step));
  const last = data.evals[data.evals.length - 1];
  const auc = evalSteps.size >= 2
    ? lineChart(
      "Eval AUC",
      aucNames.map((name) => ({
        name,
        points: data.evals.filter((e) => name in e.metrics).map((e) => [e.step, e.metrics[name]]),
      })),
      { xLabel: "step" },
    )
    : barChart(
      `Eval AUC${last ? ` (step ${last.step})` : ""}`,
      aucNames.map((name) => ({ name, value: last.metrics[name] })),
    );
  const rocs = Object.entries(data.rocs).map(([tower, curve]) => {
    const points: [number, number][] = Array.from(curve.fpr, (x, i) => [x, curve.tpr[i]]);
    points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return lineChart(`ROC ${tower}`, [{ name: tower, points }, {
      name: "chance",
      points: [[0, 0], [1, 1]],
    }], {
      xLabel: "false positive rate",
      yRange: [0, 1],
      square: true,
    });
  });
  const rows = [
    ...Object.entries(last?.metrics ?? {}).map(([k, v]) => [k, v.toFixed(6)]),
    ...Object.entries(data.notes ?? {}),
  ];
  return [
    "<!doctype html>",
    `<html><head><meta charset="utf-8"><title>${escape(data.title)}</title>`,
    "<style>body{font-family:sans-serif;margin:24px;color:#222}section{display:flex;flex-wrap:wrap;gap:16px}" +
    "table{border-collapse:collapse}td{padding:2px 10px;border-bottom:1px solid #eee}</style></head><body>",
    `<h1>${escape(data.title)}</h1>`,
    rows.length
      ? `<table>${
        rows.map(([k, v]) => `<tr><td>${escape(k)}</td><td>${escape(v)}</td></tr>`).join("")
      }</table>`
      : "",
    `<section>${loss}${auc}</section>`,
    `<section>${rocs.join("")}${data.gates ? gateHeatmap(data.gates) : ""}</section>`,
    "</body></html>",
  ].join("\n");
}
