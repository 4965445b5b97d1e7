// A small SVG line chart (no library: the UI ships no third-party assets).
// Tunesmith.chart("loss") -> {node, set(series)}, series = [{name, points: [[x, y], ...]}].
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#e67700"];
  const W = 560, H = 230, L = 56, R = 12, T = 10, B = 28;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(lo, hi, count) {
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    const raw = (hi - lo) / count;
    const step = Math.pow(10, Math.floor(Math.log10(raw)));
    const nice = [1, 2, 2.5, 5, 10].map((m) => m * step).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / nice) * nice; v <= hi + nice * 1e-9; v += nice) out.push(+v.toPrecision(12));
    return out;
  }

  function label(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return +v.toPrecision(4) + "";
  }

  function chart(title) {
    const node = document.createElement("div");
    node.className = "chart";
    node.dataset.chart = title;
    const heading = document.createElement("p");
    heading.className = "title";
    heading.textContent = title;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    const legend = document.createElement("div");
    legend.className = "muted";
    legend.style.fontSize = "12px";
    node.append(heading, root, legend);
    let current = [];

    function draw() {
      root.replaceChildren();
      legend.replaceChildren();
      const all = current.flatMap((s) => s.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
      node.dataset.points = String(all.length);
      if (!all.length) {
        root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#8a94a3" }, "no points yet"));
        return;
      }
      let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
      let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
      y0 -= pad; y1 += pad;
      const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
      const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
      for (const v of ticks(y0, y1, 5)) {
        root.append(svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#eef0f3" }));
        root.append(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5f6b7a" }, label(v)));
      }
      for (const v of ticks(x0, x1, 6)) {
        root.append(svg("text", { x: sx(v), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: "#5f6b7a" }, label(v)));
      }
      root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#9aa5b1" }));
      root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#9aa5b1" }));
      current.forEach((series, i) => {
        const color = series.color || COLORS[i % COLORS.length];
        const pts = series.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
        const line = svg("polyline", { points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
          fill: "none", stroke: color, "stroke-width": 1.8, class: "series", "data-name": series.name, "data-count": pts.length });
        root.append(line);
        if (pts.length === 1) root.append(svg("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: color }));
        const key = document.createElement("span");
        key.style.marginRight = "12px";
        key.style.color = color;
        key.textContent = `■ ${series.name}`;
        legend.append(key);
      });
    }

    return {
      node,
      set(series) { current = series; draw(); },
    };
  }

  Tunesmith.chart = chart;
})();
