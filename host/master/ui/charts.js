// Charts drawn as SVG strings: a time-series area chart and a dial.
"use strict";

const Charts = (() => {
  const W = 300, H = 90;
  const fmt = (x) => (Math.abs(x) >= 100 ? Math.round(x).toString() : (Math.round(x * 100) / 100).toString());

  // points: [{t, v, total?}] sorted by t; t0..t1 the time window shown.
  // The area is `v`, the dashed line `total` (when given).
  function area(points, { t0, t1, max, label = "", cls = "" } = {}) {
    if (!points.length) {
      return `<svg class="chart ${cls}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${label}: no samples yet"><text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="nodata">no samples yet</text></svg>`;
    }
    t0 = t0 ?? points[0].t;
    t1 = Math.max(t1 ?? points[points.length - 1].t, t0 + 1);
    const top = Math.max(max ?? 0, ...points.map((p) => Math.max(p.v, p.total ?? 0)), 1e-9);
    const x = (t) => ((t - t0) / (t1 - t0)) * W;
    const y = (v) => H - 4 - (v / top) * (H - 12);
    const line = (key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
    const first = points[0], last = points[points.length - 1];
    const fill = `${line("v")}L${x(last.t).toFixed(1)},${H}L${x(first.t).toFixed(1)},${H}Z`;
    const total = points[0].total !== undefined ? `<path class="total" d="${line("total")}"/>` : "";
    return `<svg class="chart ${cls}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${label}">
      <path class="fill" d="${fill}"/><path class="line" d="${line("v")}"/>${total}
      <text x="2" y="9" class="axis">${fmt(top)}</text></svg>`;
  }

  // A ring showing `pct` (0–100) of a resource; `bad` draws it full in the
  // error colour (an agent that is not active).
  function dial(pct, { label = "", bad = false } = {}) {
    const r = 26, c = 2 * Math.PI * r;
    const p = bad ? 100 : Math.max(0, Math.min(100, pct || 0));
    const cls = bad ? "bad" : p > 90 ? "hot" : "ok";
    return `<svg class="dial" viewBox="0 0 64 64" role="img" aria-label="${label}">
      <circle cx="32" cy="32" r="${r}" class="track"/>
      <circle cx="32" cy="32" r="${r}" class="arc ${cls}" stroke-dasharray="${((p / 100) * c).toFixed(1)} ${c.toFixed(1)}" transform="rotate(-90 32 32)"/>
      <text x="32" y="36" text-anchor="middle">${bad ? "off" : Math.round(p) + "%"}</text></svg>`;
  }

  return { area, dial, fmt };
})();
