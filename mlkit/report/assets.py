"""The CSS and JavaScript inlined into every HTML report (no network, no CDN).

The script draws every chart as inline SVG from the JSON data block, makes the runs table
sortable, and toggles runs from the legend. It only ever inserts data with `textContent` and
`setAttribute`, never as HTML. When it is done it sets `data-plots-drawn` (charts with at least
one series drawn) and `data-report-ready="1"` on <body>.
"""

from __future__ import annotations

CSS = """
:root { --fg:#1d232b; --muted:#5b6675; --line:#d7dde4; --bg:#ffffff; --alt:#f5f7f9; --accent:#2463c2; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
.meta { color: var(--muted); margin: 0 0 4px; }
.note { color: var(--muted); font-size: 12.5px; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table.runs { border-collapse: collapse; width: 100%; font-size: 13px; white-space: nowrap; }
table.runs th, table.runs td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; }
table.runs td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.runs thead th { position: sticky; top: 0; background: var(--alt); cursor: pointer; user-select: none; }
table.runs thead th:hover { color: var(--accent); }
table.runs thead th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
table.runs thead th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
table.runs tbody tr:nth-child(even) { background: var(--alt); }
th.group-params { color: #6b4fa3; } th.group-metrics { color: #1f7a4d; }
th.group-params::before { content: "param "; font-weight: normal; font-size: 11px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.status { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #e8ecf0; }
.status-FINISHED { background: #dcf3e5; color: #17643a; } .status-FAILED { background: #fbe1e1; color: #9b1c1c; }
.status-KILLED { background: #fdf0d5; color: #8a5a00; } .status-RUNNING { background: #dde9fb; color: #1d4f9c; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 6px 0 10px; font-size: 12.5px; }
.legend button { border: 1px solid var(--line); background: var(--bg); border-radius: 12px; padding: 2px 10px;
                 cursor: pointer; font: inherit; color: inherit; }
.legend button.off { opacity: 0.35; text-decoration: line-through; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 14px; }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px 4px; position: relative; }
.chart h3 { margin: 0 0 4px; font-size: 13px; word-break: break-all; }
.chart svg { width: 100%; height: auto; display: block; }
.chart svg .grid { stroke: #eceff3; } .chart svg .axis { stroke: #9aa4b1; }
.chart svg text { font-size: 10.5px; fill: var(--muted); }
.chart svg .series { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
.chart svg .hidden { display: none; }
.chart .tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.95); border: 1px solid var(--line);
              border-radius: 4px; padding: 4px 7px; font-size: 11.5px; display: none; white-space: nowrap; z-index: 2; }
.images { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; max-width: 340px; }
figure img { width: 256px; max-width: 100%; height: auto; display: block; image-rendering: pixelated; }
figcaption { font-size: 11.5px; color: var(--muted); margin-top: 4px; word-break: break-all; }
ul.skipped { font-size: 12.5px; color: var(--muted); }
"""

JS = r"""
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var hiddenRuns = {};

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function fmt(v) {
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) { return v.toExponential(2); }
    return String(Number(v.toPrecision(4)));
  }

  function niceTicks(lo, hi, count) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = count / span * step;
    if (err <= 0.15) { step *= 10; } else if (err <= 0.35) { step *= 5; } else if (err <= 0.75) { step *= 2; }
    var ticks = [], start = Math.ceil(lo / step) * step;
    for (var t = start; t <= hi + step * 1e-9; t += step) { ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t); }
    return ticks;
  }

  function extent(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v !== null && isFinite(v)) { if (v < lo) { lo = v; } if (v > hi) { hi = v; } } });
    if (lo === Infinity) { return null; }
    if (lo === hi) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    return [lo, hi];
  }

  function drawChart(box, chart) {
    var W = 460, H = 250, m = { l: 58, r: 14, t: 10, b: 36 };
    var svg = box.querySelector("svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var xs = [], ys = [];
    chart.series.forEach(function (s) { xs = xs.concat(s.x); ys = ys.concat(s.y); });
    var xr = extent(xs), yr = extent(ys);
    if (!xr || !yr) { box.setAttribute("data-series-drawn", "0"); return 0; }
    function px(x) { return m.l + (x - xr[0]) / (xr[1] - xr[0]) * (W - m.l - m.r); }
    function py(y) { return H - m.b - (y - yr[0]) / (yr[1] - yr[0]) * (H - m.t - m.b); }
    niceTicks(yr[0], yr[1], 5).forEach(function (t) {
      el("line", { x1: m.l, x2: W - m.r, y1: py(t), y2: py(t), "class": "grid" }, svg);
      el("text", { x: m.l - 6, y: py(t) + 3.5, "text-anchor": "end" }, svg).textContent = fmt(t);
    });
    niceTicks(xr[0], xr[1], 6).forEach(function (t) {
      el("line", { x1: px(t), x2: px(t), y1: H - m.b, y2: H - m.b + 4, "class": "axis" }, svg);
      el("text", { x: px(t), y: H - m.b + 15, "text-anchor": "middle" }, svg).textContent = fmt(t);
    });
    el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, "class": "axis" }, svg);
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, "class": "axis" }, svg);
    el("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle" }, svg).textContent = chart.x;
    var drawn = 0;
    chart.series.forEach(function (s) {
      var run = data.runs[s.run], g = el("g", { "data-run": String(s.run) }, svg), parts = [], cur = [];
      if (hiddenRuns[s.run]) { g.setAttribute("class", "hidden"); }
      for (var i = 0; i < s.x.length; i++) {
        if (s.y[i] === null || !isFinite(s.y[i])) { if (cur.length) { parts.push(cur); cur = []; } continue; }
        cur.push(px(s.x[i]).toFixed(1) + "," + py(s.y[i]).toFixed(1));
      }
      if (cur.length) { parts.push(cur); }
      parts.forEach(function (pts) {
        if (pts.length === 1) {
          var xy = pts[0].split(",");
          el("circle", { cx: xy[0], cy: xy[1], r: 3, fill: run.color, "class": "point" }, g);
        } else {
          el("polyline", { points: pts.join(" "), stroke: run.color, "class": "series" }, g);
        }
      });
      if (parts.length) { drawn += 1; }
    });
    box.setAttribute("data-series-drawn", String(drawn));
    addTooltip(box, svg, chart, px, xr, W, m);
    return drawn;
  }

  function nearest(xsArr, x) {
    var lo = 0, hi = xsArr.length - 1;
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (xsArr[mid] < x) { lo = mid; } else { hi = mid; } }
    return Math.abs(xsArr[lo] - x) <= Math.abs(xsArr[hi] - x) ? lo : hi;
  }

  function addTooltip(box, svg, chart, px, xr, W, m) {
    var tip = document.createElement("div");
    tip.className = "tip";
    box.appendChild(tip);
    var cursor = el("line", { y1: m.t, y2: 250 - m.b, "class": "axis", visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", function (ev) {
      var rect = svg.getBoundingClientRect(), scale = W / rect.width;
      var x = xr[0] + ((ev.clientX - rect.left) * scale - m.l) / (W - m.l - m.r) * (xr[1] - xr[0]);
      while (tip.firstChild) { tip.removeChild(tip.firstChild); }
      var head = document.createElement("div");
      head.textContent = chart.x + " " + fmt(x);
      tip.appendChild(head);
      chart.series.forEach(function (s) {
        if (hiddenRuns[s.run] || !s.x.length) { return; }
        var i = nearest(s.x, x), row = document.createElement("div"), sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = data.runs[s.run].color;
        row.appendChild(sw);
        row.appendChild(document.createTextNode(data.runs[s.run].label + ": " + (s.y[i] === null ? "n/a" : fmt(s.y[i]))));
        tip.appendChild(row);
      });
      cursor.setAttribute("x1", px(Math.min(Math.max(x, xr[0]), xr[1])));
      cursor.setAttribute("x2", cursor.getAttribute("x1"));
      cursor.setAttribute("visibility", "visible");
      tip.style.display = "block";
      var left = ev.clientX - box.getBoundingClientRect().left + 14;
      tip.style.left = Math.min(left, box.clientWidth - tip.offsetWidth - 4) + "px";
      tip.style.top = "30px";
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; cursor.setAttribute("visibility", "hidden"); });
  }

  function sortValue(cell) {
    var raw = cell.getAttribute("data-v");
    if (raw === null || raw === "") { return null; }
    return raw;
  }

  function sortTable(table, col, dir) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var values = rows.map(function (r) { return sortValue(r.cells[col]); });
    var numeric = values.every(function (v) { return v === null || (v.trim() !== "" && !isNaN(Number(v))); });
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var va = values[a], vb = values[b];
      if (va === null && vb === null) { return a - b; }
      if (va === null) { return 1; }
      if (vb === null) { return -1; }
      var c = numeric ? Number(va) - Number(vb) : va.localeCompare(vb, undefined, { numeric: true });
      return (dir === "ascending" ? c : -c) || a - b;
    });
    order.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(table.tHead.rows[table.tHead.rows.length - 1].cells, function (th, i) {
      if (i === col) { th.setAttribute("aria-sort", dir); } else { th.removeAttribute("aria-sort"); }
    });
    table.setAttribute("data-sorted-by", String(col));
    table.setAttribute("data-sort-dir", dir);
  }

  function setupSorting(table) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      th.setAttribute("title", "Click to sort");
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        sortTable(table, col, dir);
      });
    });
  }

  function setupLegend() {
    var legend = document.getElementById("legend");
    if (!legend) { return; }
    data.runs.forEach(function (run, i) {
      var b = document.createElement("button"), sw = document.createElement("span");
      b.type = "button";
      b.setAttribute("data-run", String(i));
      sw.className = "swatch";
      sw.style.background = run.color;
      b.appendChild(sw);
      b.appendChild(document.createTextNode(run.label));
      b.addEventListener("click", function () {
        hiddenRuns[i] = !hiddenRuns[i];
        b.classList.toggle("off", !!hiddenRuns[i]);
        document.querySelectorAll('svg g[data-run="' + i + '"]').forEach(function (g) {
          g.classList.toggle("hidden", !!hiddenRuns[i]);
        });
      });
      legend.appendChild(b);
    });
  }

  var tables = document.querySelectorAll("table.runs");
  Array.prototype.forEach.call(tables, setupSorting);
  setupLegend();
  var plotted = 0;
  data.charts.forEach(function (chart, i) {
    var box = document.getElementById("chart-" + i);
    if (box && drawChart(box, chart) > 0) { plotted += 1; }
  });
  document.body.setAttribute("data-plots-drawn", String(plotted));
  document.body.setAttribute("data-report-ready", "1");
})();
"""
