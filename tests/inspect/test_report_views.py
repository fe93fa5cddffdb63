"""The report's reading aids, through the real CLI and in real headless Chromium: params that differ
first, time axes, the step/epoch/time switch, log scale and smoothing, the param-vs-metric scatter
plot and each run's own section (params, tags, artifacts, log tail, model URI)."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pytest
from inspect_support import T0, make_png, read_png
from test_report import browser, chromium

from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.store import FileStore

from helpers import run_mlkit

COMMON = {f"common_{k:02d}": "same" for k in range(26)}  # 26 params alike, sorted before "lr"


def _sweep(root: Path, tmp: Path) -> list[str]:
    """Four runs: lr and width differ, 28 params do not; epoch, a sparse val metric, two system
    metrics sampled on their own clock, a logged model, an output.log with an ESC byte."""
    store = FileStore(root)
    exp = store.create_experiment("cnn-sweep")
    ids = []
    for i, (lr, width) in enumerate([(0.1, 32), (0.01, 64), (0.001, 32), (0.0003, 128)]):
        start = T0 + i * 100_000
        rid = store.create_run(exp, run_name=f"lr{lr}-w{width}", start_time=start).info.run_id
        store.log_params(rid, {**COMMON, "lr": lr, "width": width, "optimizer": "adam", "seed": 0})
        for step in range(60):
            ts = start + step * 1500
            loss = 2.0 * math.exp(-step * (i + 1) / 30) + 0.1 * math.sin(step * 1.7) + 0.2
            store.log_metric(rid, "train_loss", loss, step=step, timestamp=ts)
            store.log_metric(rid, "epoch", step // 10, step=step, timestamp=ts)
            if step % 10 == 9:
                store.log_metric(rid, "val_accuracy", 0.6 + 0.05 * i + 0.005 * step, step=step, timestamp=ts)
        for tick in range(40):  # the sampler's step is a tick counter; its clock is what matters
            ts = start + tick * 2250
            store.log_metric(rid, "system/cpu_utilization_percentage", 50 + 20 * math.sin(tick / 4 + i), step=tick, timestamp=ts)  # fmt: skip
        model = store.artifact_dir(rid) / "model"
        model.mkdir(parents=True)
        (model / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nrun_id: {rid}\n")
        logs = store.artifact_dir(rid) / "logs"
        logs.mkdir()
        lines = b"".join(b"epoch %d loss %.3f\n" % (e, 1 / (e + 1)) for e in range(80))
        (logs / "output.log").write_bytes(lines + b"sample: \x1bH<b>bold</b>\n")
        image = tmp / f"grid-{i}.png"
        image.write_bytes(make_png(24, 24, seed=i))
        store.log_artifact(rid, image, "samples")
        store.set_terminated(rid, "FINISHED", end_time=start + 90_000)
        ids.append(rid)
    registry = RegistryStore(root)
    registry.create_model_version("cnn", f"runs:/{ids[1]}/model", run_id=ids[1])
    registry.set_alias("cnn", "champion", 1)
    return ids


@pytest.fixture
def built(store_root: Path, tmp_path: Path) -> tuple[list[str], Path, str]:
    ids = _sweep(store_root, tmp_path)
    out = tmp_path / "report.html"
    result = run_mlkit("report", "-e", "cnn-sweep", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return ids, out, out.read_text(encoding="utf-8")


def _header(page: str) -> list[str]:
    head = re.search(r'<table class="runs hide-same" id="runs-table"><thead><tr>(.*?)</tr>', page).group(1)
    return [html.unescape(re.sub(r"<[^>]+>", "", th)) for th in re.findall(r"<th[^>]*>.*?</th>", head)]


def test_table_puts_the_params_that_differ_first_and_epoch_is_no_curve(built):
    ids, _, page = built
    columns = _header(page)
    # validation metrics first, as `runs list` orders them; then the params that differ
    fixed = ["Run", "Run ID", "Status", "Start", "Duration"]
    assert columns[:9] == [*fixed, "val_accuracy", "train_loss", "lr", "width"]
    assert set(columns[9:]) == {*COMMON, "optimizer", "seed"} and "epoch" not in columns
    assert 'class="group-params same">common_00<' in page and "Show the 28 param(s) all runs share" in page
    assert 'data-metric="epoch"' not in page and "Not drawn as curves: epoch" in page
    for rid in ids:  # each name links to its section
        assert (
            f'<a href="#run-{rid}" class="run-link">' in page
            and f'<details class="run-detail" id="run-{rid}"' in page
        )
    assert f"runs:/{ids[1]}/model" in page and "models:/cnn/1 (champion)" in page
    # the log tail: the last lines only, the ESC byte shown as text, the markup escaped
    assert "epoch 79 loss" in page and "epoch 0 loss" not in page
    assert "sample: \\x1bH&lt;b&gt;bold&lt;/b&gt;" in page and "\x1b" not in page


def test_cli_options_and_their_errors(built, tmp_path: Path):
    out = tmp_path / "o.html"
    ok = run_mlkit(
        "report", "-e", "cnn-sweep", "-o", str(out), "--x", "time", "--log-y", "--smoothing", "0.5"
    )
    assert ok.returncode == 0, ok.stderr
    assert '"settings":{"x":"time","logY":true,"smoothing":0.5}' in out.read_text()
    bad = run_mlkit("report", "-e", "cnn-sweep", "-o", str(out), "--x", "wall")
    assert bad.returncode == 2 and "--x 'wall': must be one of step, epoch, time" in bad.stderr
    bad = run_mlkit("report", "-e", "cnn-sweep", "-o", str(out), "--smoothing", "1")
    assert bad.returncode == 2 and "--smoothing" in bad.stderr and "Traceback" not in bad.stderr


# Runs after the report's script: reads each chart's axis, then flips every control and reads again.
DRIVER = """
<script>
window.addEventListener("load", function () {
  var b = document.body;
  function chart(key) { return document.querySelector('.chart[data-metric="' + key + '"]'); }
  function ticks(box, cls) {
    return Array.prototype.map.call(box.querySelectorAll("text." + cls), function (t) { return t.textContent; }).join("|");
  }
  function change(id, value) {
    var node = document.getElementById(id);
    if (node.type === "checkbox") { node.checked = value; } else { node.value = value; }
    node.dispatchEvent(new Event(node.type === "range" ? "input" : "change"));
  }
  var sys = chart("system/cpu_utilization_percentage"), loss = chart("train_loss");
  b.setAttribute("data-t-sys", sys.getAttribute("data-x-axis") + ";" + ticks(sys, "xtick") + ";" + ticks(sys, "xlabel"));
  b.setAttribute("data-t-step", loss.getAttribute("data-x-axis") + ";" + ticks(loss, "xtick"));
  change("x-axis", "epoch"); loss = chart("train_loss");
  b.setAttribute("data-t-epoch", loss.getAttribute("data-x-axis") + ";" + ticks(loss, "xtick"));
  change("x-axis", "time"); loss = chart("train_loss");
  b.setAttribute("data-t-time", loss.getAttribute("data-x-axis") + ";" + ticks(loss, "xtick"));
  change("log-y", true); loss = chart("train_loss");
  b.setAttribute("data-t-log", loss.getAttribute("data-log-y") + ";" + ticks(loss, "ytick"));
  change("smoothing", "0.8"); loss = chart("train_loss");
  b.setAttribute("data-t-smooth", loss.querySelectorAll("polyline.raw").length + ";" + loss.querySelectorAll("polyline.series").length);
  var sc = document.getElementById("scatter");
  b.setAttribute("data-t-scatter", [sc.getAttribute("data-param"), sc.getAttribute("data-metric"),
    sc.getAttribute("data-points-drawn"), sc.querySelectorAll("circle.dot").length, ticks(sc, "xtick")].join(";"));
  change("scatter-param", "width");
  b.setAttribute("data-t-scatter2", sc.getAttribute("data-param") + ";" + ticks(sc, "xtick"));
  var toggle = document.getElementById("toggle-same"), table = document.getElementById("runs-table");
  var seed = Array.prototype.filter.call(table.tHead.rows[0].cells, function (th) { return th.textContent === "seed"; })[0];
  b.setAttribute("data-t-same", getComputedStyle(seed).display);
  toggle.click();
  b.setAttribute("data-t-same2", getComputedStyle(seed).display + ";" + toggle.textContent);
  var link = document.querySelector("a.run-link"), id = link.getAttribute("href").slice(1);
  link.click();
  setTimeout(function () {
    var section = document.getElementById(id);
    b.setAttribute("data-t-open", id + ";" + section.open + ";" + section.querySelectorAll("h4").length);
    b.setAttribute("data-t-done", "1");
  }, 50);
});
</script>
"""


@browser
@pytest.mark.browser
def test_the_new_views_in_headless_chromium(built, tmp_path: Path):
    ids, path, page = built
    driven = path.with_name("driven.html")
    driven.write_text(page.replace("</body>", DRIVER + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, driven, "--dump-dom")
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert attrs["data-report-ready"] == "1" and attrs["data-t-done"] == "1"
    assert attrs["data-plots-drawn"] == "3"  # train_loss, val_accuracy, cpu: not epoch
    # system metrics against wall time: 40 ticks 2.25 s apart = 87.75 s, ticks every 15 s
    axis, xticks, label = attrs["data-t-sys"].split(";")
    assert axis == "time" and xticks == "0:00|0:15|0:30|0:45|1:00|1:15" and label == "time since run start"
    assert attrs["data-t-step"] == "step;0|10|20|30|40|50"
    assert attrs["data-t-epoch"] == "epoch;0|1|2|3|4|5"
    assert attrs["data-t-time"].startswith("time;0:00|0:15|")
    log, yticks = attrs["data-t-log"].split(";")
    assert log == "1" and set(yticks.split("|")) >= {"0.2", "0.5", "1", "2"}  # 1-2-5 ticks, not linear
    assert attrs["data-t-smooth"] == "4;4"  # the raw curves faded behind the smoothed ones
    param, metric, drawn, dots, xt = attrs["data-t-scatter"].split(";")
    assert (param, metric, drawn, dots) == ("lr", "val_accuracy", "4", "4")
    assert xt == "0.001|0.01|0.1"  # lr spans 3 decades: log x by itself
    assert attrs["data-t-scatter2"].startswith("width;")
    assert attrs["data-t-same"] == "none" and attrs["data-t-same2"].startswith("table-cell;Hide the 28")
    opened, is_open, headings = attrs["data-t-open"].split(";")
    assert (
        opened == f"run-{ids[3]}" and is_open == "true" and headings == "5"
    )  # model, params, tags, artifacts, log


def _colours(shot: Path, size: tuple[int, int]) -> dict[bytes, int]:
    width, height, rows = read_png(shot)
    assert (width, height) == size
    bpp = len(rows[0]) // width
    counts: dict[bytes, int] = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            counts[row[i : i + 3]] = counts.get(row[i : i + 3], 0) + 1
    return counts


RUN_COLOURS = (b"\x1f\x77\xb4", b"\xff\x7f\x0e", b"\x2c\xa0\x2c", b"\xd6\x27\x28")  # tab10, runs 0-3


@browser
@pytest.mark.browser
def test_screenshots_show_the_scatter_plot_and_a_run_section(built, tmp_path: Path):
    ids, path, page = built
    # the scatter plot scrolled to the top of an 1100x560 window: one dot per run, nothing else coloured
    scatter = path.with_name("scatter.html")
    scroll = (  # drop what comes before the scatter plot (after the report's script drew it)
        '<script>window.addEventListener("load", function () { var s = document.getElementById("scatter-section");'
        " while (s.previousSibling) { s.parentNode.removeChild(s.previousSibling); } });</script></body>"
    )
    scatter.write_text(page.replace("</body>", scroll), encoding="utf-8")
    shot = tmp_path / "scatter.png"
    chromium(tmp_path, scatter, f"--screenshot={shot}", "--window-size=1100,560", "--hide-scrollbars")
    counts = _colours(shot, (1100, 560))
    for rgb in RUN_COLOURS:
        assert 60 < counts.get(rgb, 0) < 600, (rgb, counts.get(rgb))  # a dot, not a curve
    # a run's section, opened through its anchor as a click on its name does
    section = path.with_name("section.html")
    jump = (  # click the run's name in the table, then drop what comes before its section
        '<script>window.addEventListener("load", function () {'
        f" document.querySelector('a[href=\"#run-{ids[1]}\"]').click();"
        f' var s = document.getElementById("run-{ids[1]}");'
        " while (s.previousSibling) { s.parentNode.removeChild(s.previousSibling); } });</script></body>"
    )
    section.write_text(page.replace("</body>", jump), encoding="utf-8")
    shot = tmp_path / "section.png"
    chromium(tmp_path, section, f"--screenshot={shot}", "--window-size=1100,900", "--hide-scrollbars")
    counts = _colours(shot, (1100, 900))
    assert counts.get(b"\xfb\xfc\xfd", 0) > 100_000  # the open section's background fills the view
    assert counts.get(b"\xf3\xf5\xf7", 0) > 20_000  # the log tail's box
