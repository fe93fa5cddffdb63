"""The CSS and JavaScript inlined into every HTML report (no network, no CDN).

The script draws every chart as inline SVG from the JSON data block: the metric curves (x axis
step, epoch or time since the run started; log scale; EMA smoothing), the system metrics (always
against time) and a param-vs-metric scatter plot. It makes the runs table sortable, toggles runs
from the legend and the params every run shares, and opens a run's section when its name is
clicked. It only ever inserts data with `textContent` and `setAttribute`, never as HTML. When it
is done it sets `data-plots-drawn` (charts with at least one series drawn) and
`data-report-ready="1"` on <body>.
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
table.runs.hide-same .same { display: none; }
th.group-params.same { color: #8d80a8; }
.toc { font-size: 12.5px; margin: 8px 0 0; }
a { color: var(--accent); } a.run-link { color: inherit; text-decoration: underline dotted; }
.controls { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; margin: 4px 0 8px; font-size: 12.5px; }
.controls select, .controls button, #toggle-same { font: inherit; }
.chart svg .raw { fill: none; stroke-width: 1.2; opacity: 0.25; }
.chart.scatter { max-width: 640px; }
.chart svg .dot { stroke: #fff; stroke-width: 1; }
details.run-detail { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 8px; padding: 6px 10px; }
details.run-detail > summary { cursor: pointer; font-weight: 600; }
details.run-detail[open] { background: #fbfcfd; }
.run-body h4 { font-size: 13px; margin: 12px 0 4px; }
table.kv { border-collapse: collapse; font-size: 12.5px; }
table.kv th, table.kv td { text-align: left; padding: 2px 12px 2px 0; vertical-align: top; word-break: break-all; }
table.kv th { font-weight: 500; color: var(--muted); white-space: nowrap; }
table.kv tr.changed th { color: #6b4fa3; font-weight: 700; }
details.same-params > summary { cursor: pointer; font-size: 12.5px; color: var(--muted); margin: 4px 0; }
ul.artifacts, ul.models { font-size: 12.5px; margin: 0; padding-left: 18px; columns: 2; }
pre.log { font-size: 11.5px; background: #f3f5f7; border: 1px solid var(--line); border-radius: 4px; padding: 8px;
          max-height: 360px; overflow: auto; white-space: pre-wrap; word-break: break-all; }
.failure { color: #9b1c1c; }
"""

JS = r"""
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var hiddenRuns = {};
  var state = { x: data.settings.x, logY: data.settings.logY, smoothing: data.settings.smoothing };
  var W = 460, H = 250, M = { l: 58, r: 14, t: 10, b: 36 };
  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

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

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function fmtTime(sec, span) {
    sec = Math.round(sec);
    if (span < 60) { return sec + "s"; }
    var h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    if (span < 3600 * 2) { return (h * 60 + m) + ":" + pad2(s); }
    return h + "h" + pad2(m);
  }

  function niceTicks(lo, hi, count) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = count / span * step;
    if (err <= 0.15) { step *= 10; } else if (err <= 0.35) { step *= 5; } else if (err <= 0.75) { step *= 2; }
    var ticks = [], start = Math.ceil(lo / step) * step;
    for (var t = start; t <= hi + step * 1e-9; t += step) { ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t); }
    return ticks;
  }

  function timeTicks(lo, hi) {
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) { if ((hi - lo) / TIME_STEPS[i] <= 6) { step = TIME_STEPS[i]; break; } }
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) { ticks.push(t); }
    return ticks;
  }

  function logTicks(lo, hi) {  // lo, hi are log10 values; ticks at 1, 2, 5 x 10^k when few decades
    var ticks = [], a = Math.floor(lo), b = Math.ceil(hi), mult = b - a <= 2 ? [1, 2, 5] : [1];
    for (var k = a; k <= b; k++) {
      mult.forEach(function (m) { var v = Math.log10(m) + k; if (v >= lo - 1e-9 && v <= hi + 1e-9) { ticks.push(v); } });
    }
    return ticks;
  }

  function extent(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v !== null && isFinite(v)) { if (v < lo) { lo = v; } if (v > hi) { hi = v; } } });
    if (lo === Infinity) { return null; }
    if (lo === hi) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    return [lo, hi];
  }

  function smooth(ys, w) {  // TensorBoard's debiased exponential moving average; gaps stay gaps
    if (!w) { return ys; }
    var last = 0, n = 0;
    return ys.map(function (y) {
      if (y === null || !isFinite(y)) { return null; }
      last = last * w + (1 - w) * y; n += 1;
      return last / (1 - Math.pow(w, n));
    });
  }

  function axisOf(chart) {
    if (chart.group === "system") { return "time"; }
    if (state.x === "step" && chart.x === "time") { return "time"; }  // every step equal: time spreads them
    if (state.x === "epoch" && !chart.series.some(function (s) { return s.epoch.some(function (e) { return e !== null; }); })) {
      return "step";
    }
    return state.x;
  }

  function xsOf(s, axis) { return axis === "time" ? s.t : axis === "epoch" ? s.epoch : s.step; }

  function freshSvg(box) {
    var old = box.querySelector("svg"), svg = old.cloneNode(false);  // no children, no listeners
    old.parentNode.replaceChild(svg, old);
    Array.prototype.forEach.call(box.querySelectorAll(".tip"), function (t) { t.parentNode.removeChild(t); });
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    return svg;
  }

  function frame(svg, xr, yr, xTicks, xFmt, yTicks, yFmt, label) {
    function px(x) { return M.l + (x - xr[0]) / (xr[1] - xr[0]) * (W - M.l - M.r); }
    function py(y) { return H - M.b - (y - yr[0]) / (yr[1] - yr[0]) * (H - M.t - M.b); }
    yTicks.forEach(function (t) {
      el("line", { x1: M.l, x2: W - M.r, y1: py(t), y2: py(t), "class": "grid" }, svg);
      el("text", { x: M.l - 6, y: py(t) + 3.5, "text-anchor": "end", "class": "ytick" }, svg).textContent = yFmt(t);
    });
    xTicks.forEach(function (t) {
      el("line", { x1: px(t), x2: px(t), y1: H - M.b, y2: H - M.b + 4, "class": "axis" }, svg);
      el("text", { x: px(t), y: H - M.b + 15, "text-anchor": "middle", "class": "xtick" }, svg).textContent = xFmt(t);
    });
    el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, "class": "axis" }, svg);
    el("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, "class": "axis" }, svg);
    el("text", { x: (M.l + W - M.r) / 2, y: H - 4, "text-anchor": "middle", "class": "xlabel" }, svg).textContent = label;
    return { px: px, py: py };
  }

  function drawChart(box, chart) {
    var svg = freshSvg(box), axis = axisOf(chart), logY = state.logY;
    var prepared = chart.series.map(function (s) {
      var xs = xsOf(s, axis), ys = s.y.map(function (y) { return y === null ? null : logY ? (y > 0 ? Math.log10(y) : null) : y; });
      return { run: s.run, x: xs, raw: ys, y: smooth(ys, state.smoothing) };
    });
    var allX = [], allY = [];
    prepared.forEach(function (p) { allX = allX.concat(p.x); allY = allY.concat(p.raw); });
    var xr = extent(allX), yr = extent(allY);
    box.setAttribute("data-x-axis", axis);
    box.setAttribute("data-log-y", logY ? "1" : "0");
    if (!xr || !yr) { box.setAttribute("data-series-drawn", "0"); return 0; }
    var label = axis === "time" ? "time since run start" : axis;
    var xTicks = axis === "time" ? timeTicks(xr[0], xr[1]) : niceTicks(xr[0], xr[1], 6);
    var xFmt = axis === "time" ? function (t) { return fmtTime(t, xr[1] - xr[0]); } : fmt;
    var yTicks = logY ? logTicks(yr[0], yr[1]) : niceTicks(yr[0], yr[1], 5);
    var yFmt = logY ? function (t) { return fmt(Math.pow(10, t)); } : fmt;
    var f = frame(svg, xr, yr, xTicks, xFmt, yTicks, yFmt, label);
    var drawn = 0;
    prepared.forEach(function (p) {
      var run = data.runs[p.run], g = el("g", { "data-run": String(p.run) }, svg);
      if (hiddenRuns[p.run]) { g.setAttribute("class", "hidden"); }
      function line(ys, cls) {
        var parts = [], cur = [];
        for (var i = 0; i < p.x.length; i++) {
          if (ys[i] === null || p.x[i] === null || !isFinite(ys[i])) { if (cur.length) { parts.push(cur); cur = []; } continue; }
          cur.push(f.px(p.x[i]).toFixed(1) + "," + f.py(ys[i]).toFixed(1));
        }
        if (cur.length) { parts.push(cur); }
        parts.forEach(function (pts) {
          if (pts.length === 1) {
            var xy = pts[0].split(",");
            el("circle", { cx: xy[0], cy: xy[1], r: 3, fill: run.color, "class": "point" }, g);
          } else {
            el("polyline", { points: pts.join(" "), stroke: run.color, "class": cls }, g);
          }
        });
        return parts.length;
      }
      if (state.smoothing > 0) { line(p.raw, "raw"); }
      if (line(p.y, "series")) { drawn += 1; }
    });
    box.setAttribute("data-series-drawn", String(drawn));
    addTooltip(box, svg, chart, prepared, f.px, xr, label, axis === "time" ? xFmt : fmt, logY);
    return drawn;
  }

  function nearest(xsArr, x) {
    var best = -1, dist = Infinity;
    for (var i = 0; i < xsArr.length; i++) {
      if (xsArr[i] === null) { continue; }
      var d = Math.abs(xsArr[i] - x);
      if (d < dist) { dist = d; best = i; }
    }
    return best;
  }

  function addTooltip(box, svg, chart, prepared, px, xr, label, xFmt, logY) {
    var tip = document.createElement("div");
    tip.className = "tip";
    box.appendChild(tip);
    var cursor = el("line", { y1: M.t, y2: H - M.b, "class": "axis", visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", function (ev) {
      var rect = svg.getBoundingClientRect(), scale = W / rect.width;
      var x = xr[0] + ((ev.clientX - rect.left) * scale - M.l) / (W - M.l - M.r) * (xr[1] - xr[0]);
      while (tip.firstChild) { tip.removeChild(tip.firstChild); }
      var head = document.createElement("div");
      head.textContent = label + " " + xFmt(x);
      tip.appendChild(head);
      prepared.forEach(function (p) {
        if (hiddenRuns[p.run] || !p.x.length) { return; }
        var i = nearest(p.x, x);
        if (i < 0) { return; }
        var row = document.createElement("div"), sw = document.createElement("span"), y = p.y[i];
        sw.className = "swatch";
        sw.style.background = data.runs[p.run].color;
        row.appendChild(sw);
        var shown = y === null ? "n/a" : fmt(logY ? Math.pow(10, y) : y);
        row.appendChild(document.createTextNode(data.runs[p.run].label + ": " + shown));
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

  function drawAll() {
    var plotted = 0;
    data.charts.forEach(function (chart, i) {
      var box = document.getElementById("chart-" + i);
      if (box && drawChart(box, chart) > 0) { plotted += 1; }
    });
    document.body.setAttribute("data-plots-drawn", String(plotted));
  }

  // ------------------------------------------------------------------ param vs metric scatter
  function numeric(values) { return values.every(function (v) { return v.trim() !== "" && isFinite(Number(v)); }); }

  function setupScatter() {
    var box = document.getElementById("scatter");
    if (!box) { return; }
    var pSel = document.getElementById("scatter-param"), mSel = document.getElementById("scatter-metric");
    var logX = document.getElementById("scatter-log-x");
    function option(sel, value, text) {
      var o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
    }
    data.params.forEach(function (k) { option(pSel, k, k + (data.changed.indexOf(k) >= 0 ? "" : " (same in all)")); });
    data.metrics.forEach(function (k) { option(mSel, k, k); });
    function valuesOf(k) { return data.runs.map(function (r) { return r.params[k]; }).filter(function (v) { return v !== undefined; }); }
    var firstNumeric = data.changed.filter(function (k) { return numeric(valuesOf(k)); })[0];
    pSel.value = firstNumeric || data.changed[0] || data.params[0] || "";
    mSel.value = data.metrics.filter(function (k) { return /^val/.test(k); })[0] || data.metrics[0] || "";
    function autoLog() {
      var vs = valuesOf(pSel.value);
      if (!numeric(vs)) { logX.checked = false; return; }
      var nums = vs.map(Number), lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
      logX.checked = lo > 0 && hi / lo >= 100;
    }
    autoLog();
    function draw() {
      var svg = freshSvg(box), param = pSel.value, metric = mSel.value;
      document.getElementById("scatter-title").textContent = metric + " against " + param;
      box.setAttribute("data-param", param);
      box.setAttribute("data-metric", metric);
      var points = [];
      data.runs.forEach(function (r, i) {
        if (r.params[param] !== undefined && r.metrics[metric] !== undefined) { points.push({ run: i, raw: r.params[param], y: r.metrics[metric] }); }
      });
      var isNum = numeric(points.map(function (p) { return p.raw; })), useLog = isNum && logX.checked;
      if (useLog && points.some(function (p) { return Number(p.raw) <= 0; })) { useLog = false; }
      var cats = [];
      points.forEach(function (p) { if (cats.indexOf(p.raw) < 0) { cats.push(p.raw); } });
      cats.sort(function (a, b) { return a.localeCompare(b, undefined, { numeric: true }); });
      points.forEach(function (p) { p.x = !isNum ? cats.indexOf(p.raw) : useLog ? Math.log10(Number(p.raw)) : Number(p.raw); });
      var xr = extent(points.map(function (p) { return p.x; })), yr = extent(points.map(function (p) { return p.y; }));
      box.setAttribute("data-points-drawn", "0");
      if (!xr || !yr) { return; }
      if (!isNum) { xr = [-0.5, cats.length - 0.5]; }
      var xPad = (xr[1] - xr[0]) * 0.06, yPad = (yr[1] - yr[0]) * 0.06;
      xr = isNum ? [xr[0] - xPad, xr[1] + xPad] : xr; yr = [yr[0] - yPad, yr[1] + yPad];
      var xTicks = !isNum ? cats.map(function (c, i) { return i; }) : useLog ? logTicks(xr[0], xr[1]) : niceTicks(xr[0], xr[1], 6);
      var xFmt = !isNum ? function (i) { return cats[i].length > 12 ? cats[i].slice(0, 11) + "…" : cats[i]; }
        : useLog ? function (t) { return fmt(Math.pow(10, t)); } : fmt;
      var f = frame(svg, xr, yr, xTicks, xFmt, niceTicks(yr[0], yr[1], 5), fmt, param + (useLog ? " (log)" : ""));
      points.forEach(function (p) {
        var run = data.runs[p.run], g = el("g", { "data-run": String(p.run) }, svg);
        if (hiddenRuns[p.run]) { g.setAttribute("class", "hidden"); }
        var dot = el("circle", { cx: f.px(p.x).toFixed(1), cy: f.py(p.y).toFixed(1), r: 6, fill: run.color, "class": "dot" }, g);
        el("title", {}, dot).textContent = run.label + ": " + param + "=" + p.raw + ", " + metric + "=" + fmt(p.y);
      });
      box.setAttribute("data-points-drawn", String(points.length));
    }
    pSel.addEventListener("change", function () { autoLog(); draw(); });
    mSel.addEventListener("change", draw);
    logX.addEventListener("change", draw);
    draw();
  }

  // ------------------------------------------------------------------ table, legend, controls
  function sortValue(cell) {
    var raw = cell.getAttribute("data-v");
    if (raw === null || raw === "") { return null; }
    return raw;
  }

  function sortTable(table, col, dir) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var values = rows.map(function (r) { return sortValue(r.cells[col]); });
    var isNum = values.every(function (v) { return v === null || (v.trim() !== "" && !isNaN(Number(v))); });
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var va = values[a], vb = values[b];
      if (va === null && vb === null) { return a - b; }
      if (va === null) { return 1; }
      if (vb === null) { return -1; }
      var c = isNum ? Number(va) - Number(vb) : va.localeCompare(vb, undefined, { numeric: true });
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

  function setupSameToggle() {
    var button = document.getElementById("toggle-same"), table = document.getElementById("runs-table");
    if (!button || !table) { return; }
    var n = button.getAttribute("data-count");
    button.addEventListener("click", function () {
      var hide = table.classList.toggle("hide-same");  // true: now hidden
      button.textContent = hide ? "Show the " + n + " param(s) all runs share" : "Hide the " + n + " param(s) all runs share";
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

  function setupControls() {
    var xSel = document.getElementById("x-axis"), logY = document.getElementById("log-y");
    var sm = document.getElementById("smoothing"), smOut = document.getElementById("smoothing-value");
    if (!xSel) { return; }
    xSel.value = state.x;
    if (xSel.value !== state.x) { state.x = xSel.value; }  // e.g. epoch asked for, none logged
    xSel.addEventListener("change", function () { state.x = xSel.value; drawAll(); });
    logY.addEventListener("change", function () { state.logY = logY.checked; drawAll(); });
    sm.addEventListener("input", function () { state.smoothing = Number(sm.value); smOut.textContent = sm.value; drawAll(); });
  }

  function openRunFromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.runs"), setupSorting);
  setupSameToggle();
  setupLegend();
  setupControls();
  Array.prototype.forEach.call(document.querySelectorAll("details.run-detail"), function (d) {
    d.addEventListener("toggle", function () {  // a log tail opens at its end
      Array.prototype.forEach.call(d.querySelectorAll("pre.log"), function (pre) { pre.scrollTop = pre.scrollHeight; });
    });
  });
  window.addEventListener("hashchange", openRunFromHash);
  openRunFromHash();
  drawAll();
  setupScatter();
  document.body.setAttribute("data-report-ready", "1");
})();
"""
