"""`mlkit report`: a self-contained, escaped HTML page, checked as written and as Chromium renders it."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from inspect_support import XSS_NAME, XSS_PARAM, SweepStore, make_png, read_png
from typer.testing import CliRunner

from mlkit.cli import app
from mlkit.errors import NotFoundError, UsageError
from mlkit.report.collect import ReportOptions
from mlkit.report.html import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")

# Run in a copy of the report after its own script: sorts by two columns by clicking their
# headers, and records the row order and the decoded size of every image into <body>.
DRIVER = """
<script>
window.addEventListener("load", function () {
  var table = document.getElementById("runs-table"), ths = table.tHead.rows[0].cells;
  function order() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.getAttribute("data-run-id"); }).join(",");
  }
  function header(text) {
    return Array.prototype.filter.call(ths, function (th) { return th.textContent.trim() === text; })[0];
  }
  var b = document.body;
  header("epochs").click(); b.setAttribute("data-t-epochs-asc", order());
  header("epochs").click(); b.setAttribute("data-t-epochs-desc", order());
  b.setAttribute("data-t-aria", header("epochs").getAttribute("aria-sort"));
  header("Run").click(); b.setAttribute("data-t-name-asc", order());
  b.setAttribute("data-t-images", Array.prototype.map.call(document.querySelectorAll("figure img"),
    function (img) { return img.naturalWidth + "x" + img.naturalHeight; }).join(","));
});
</script>
"""


def chromium(tmp: Path, page: Path, *args: str) -> str:
    """Run headless Chromium on a local file; stdout (the DOM with --dump-dom)."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000", *args, page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def report(sweep: SweepStore, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "out" / "report.html"
    result = build_report(sweep.store, "cnn-sweep", out)
    assert result.path == str(out) and result.bytes == out.stat().st_size
    return out, out.read_text(encoding="utf-8")


def test_report_escapes_every_user_string(report: tuple[Path, str]):
    _, page = report
    assert XSS_NAME not in page and XSS_PARAM not in page
    assert html.escape(XSS_NAME) in page and html.escape(XSS_PARAM) in page
    assert page.count("<script") == 2 and page.count("</script>") == 2  # only the report's own
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and json.loads(data)["runs"][1]["label"].startswith(XSS_NAME)


def test_experiment_names_and_artifact_paths_are_escaped_too(store_root: Path, tmp_path: Path):
    from mlkit.tracking.store import FileStore

    store = FileStore(store_root)
    name = "exp <img src=x onerror=alert(1)>"
    run = store.create_run(store.create_experiment(name), run_name="r")
    image = tmp_path / "<b onclick=x>bold.png"
    image.write_bytes(make_png(4, 4))
    store.log_artifact(run.info.run_id, image)
    store.set_tag(run.info.run_id, "mlkit.failure_reason", "<i>lost</i>")
    store.set_terminated(run.info.run_id, "FAILED")
    out = tmp_path / "e.html"
    build_report(store, name, out)
    page = out.read_text()
    assert "<img src=x" not in page and "<b onclick" not in page and "<i>lost" not in page
    assert html.escape(name) in page and html.escape("<b onclick=x>bold.png") in page
    assert 'title="&lt;i&gt;lost&lt;/i&gt;"' in page  # why it failed, on the status


def test_report_is_self_contained(report: tuple[Path, str]):
    _, page = report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the page may not fetch anything, even if a string tried
    assert page.count('src="data:image/png;base64,') == 3


def test_report_contents(sweep: SweepStore, tmp_path: Path):
    a, b, c = sweep.run_ids
    out = tmp_path / "r.html"
    result = build_report(sweep.store, sweep.experiment_id, out, ReportOptions(run_refs=[c, a[:8]]))
    assert result.runs == [c, a] and result.runs_total == 3
    assert result.metrics == ["train_loss", "val_acc"]
    assert result.system_metrics == ["system/cpu_utilization_percentage"]
    assert [(i.run_id, i.path, i.mime) for i in result.images] == [
        (c, "samples/grid-2.png", "image/png"),
        (a, "samples/grid-0.png", "image/png"),
    ]
    page = out.read_text()
    assert b not in page
    result = build_report(sweep.store, "cnn-sweep", out, ReportOptions(max_runs=1))
    assert result.runs == [c]  # the newest
    with pytest.raises(NotFoundError, match="no experiment"):
        build_report(sweep.store, "nope", out)
    other = sweep.store.create_run("0").info.run_id
    with pytest.raises(UsageError, match="not 'cnn-sweep'"):
        build_report(sweep.store, "cnn-sweep", out, ReportOptions(run_refs=[other]))


def test_images_over_the_budget_or_not_images_are_listed_not_inlined(sweep: SweepStore, tmp_path: Path):
    a, b, c = sweep.run_ids
    big = tmp_path / "big.png"
    big.write_bytes(make_png(200, 200, seed=5))
    sweep.store.log_artifact(c, big, "samples")
    fake = tmp_path / "fake.jpg"
    fake.write_text("<svg onload=alert(1)>")
    sweep.store.log_artifact(c, fake)
    budget = 3 * 2500  # the three small grids fit, the big one does not
    assert all(
        sweep.store.artifact_file(r, f"samples/grid-{i}.png").stat().st_size < 2500
        for i, r in enumerate(sweep.run_ids)
    )
    out = tmp_path / "r.html"
    result = build_report(sweep.store, "cnn-sweep", out, ReportOptions(max_image_bytes=budget))
    assert sorted(i.path for i in result.images) == [
        "samples/grid-0.png",
        "samples/grid-1.png",
        "samples/grid-2.png",
    ]
    reasons = {s.path: s.reason for s in result.skipped_images}
    assert reasons == {
        "fake.jpg": "not a image/jpeg file",
        "samples/big.png": f"over the image budget ({budget} bytes in all)",
    }
    page = out.read_text()
    assert "2 image(s) not shown" in page and "samples/big.png" in page and "onload" not in page
    result = build_report(
        sweep.store, "cnn-sweep", out, ReportOptions(max_images_per_run=1)
    )  # natural order: the last
    assert [i.path for i in result.images if i.run_id == c] == ["samples/grid-2.png"]
    assert {s.path: s.reason for s in result.skipped_images if s.run_id == c} == {
        "fake.jpg": "only the last 1 images of a run are shown",
        "samples/big.png": "only the last 1 images of a run are shown",
    }


def test_planted_fifo_and_links_among_images_are_skipped_not_read(sweep: SweepStore, tmp_path: Path):
    # On a shared store another user controls their run's artifacts: a FIFO named like an image
    # must not hang the report, and links (out of the run, or to a file inside it) are not followed.
    c = sweep.run_ids[2]
    arts = sweep.store.artifact_dir(c)
    os.mkfifo(arts / "stuck.png")
    (arts / "outside.png").symlink_to(arts.parents[3] / "private.png")
    (arts.parents[3] / "private.png").write_bytes(make_png(8, 8, seed=1))
    (arts / "inside.png").symlink_to(arts / "samples" / "grid-2.png")
    out = tmp_path / "r.html"
    result = build_report(sweep.store, "cnn-sweep", out)
    assert sorted(i.path for i in result.images) == [
        "samples/grid-0.png",
        "samples/grid-1.png",
        "samples/grid-2.png",
    ]
    reasons = {s.path: s.reason for s in result.skipped_images}
    assert set(reasons) == {"stuck.png", "outside.png", "inside.png"}
    assert all(r.startswith("cannot read: ") for r in reasons.values())
    assert "not a regular file" in reasons["stuck.png"] and "link" in reasons["inside.png"]


def test_cli_report_json_and_errors(sweep: SweepStore, tmp_path: Path):
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["report", "--experiment", "cnn-sweep", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(out) and len(doc["runs"]) == 3 and len(doc["images"]) == 3
    assert "data_uri" not in json.dumps(doc) and "base64" not in result.stdout
    missing = CliRunner().invoke(app, ["report", "--experiment", "nope", "-o", str(out)])
    assert missing.exit_code == 66 and "no experiment" in missing.stderr


def _charts(dom: str) -> dict[str, tuple[int, int]]:
    """{metric: (data-series-drawn, number of <polyline>)} for every chart in a dumped DOM."""
    charts = {}
    for match in re.finditer(r'<div class="chart"([^>]*)>(.*?)</svg>', dom, re.S):
        attrs, body = match.groups()
        metric = re.search(r'data-metric="([^"]*)"', attrs).group(1)
        drawn = re.search(r'data-series-drawn="(\d+)"', attrs)
        charts[metric] = (int(drawn.group(1)) if drawn else -1, body.count("<polyline"))
    return charts


@browser
@pytest.mark.browser
def test_report_in_headless_chromium(report: tuple[Path, str], sweep: SweepStore, tmp_path: Path):
    path, page = report
    a, b, c = sweep.run_ids
    driven = path.with_name("driven.html")
    driven.write_text(page.replace("</body>", DRIVER + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, driven, "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
    assert attrs["data-report-ready"] == "1"
    assert "data-pwned" not in attrs  # neither the run name nor the param value ran as code
    # every chart drew one polyline per run
    assert attrs["data-plots-drawn"] == "3"
    assert _charts(dom) == {
        "train_loss": (3, 3),
        "val_acc": (3, 3),
        "system/cpu_utilization_percentage": (3, 3),
    }
    # sorting by clicking headers: numerically (5 < 20 < 100), both ways, and by name
    assert attrs["data-t-epochs-asc"] == f"{c},{a},{b}"
    assert attrs["data-t-epochs-desc"] == f"{b},{a},{c}"
    assert attrs["data-t-aria"] == "descending"
    assert attrs["data-t-name-asc"].split(",")[0] == b  # '<script...' before 'lr-...'
    # the images were decoded by the browser (inline data: URIs)
    assert attrs["data-t-images"] == "24x24,24x24,24x24"
    # the XSS name is text in the table and the legend, not an element
    assert dom.count("<script") == 3  # the report's two and the test driver
    assert html.escape(XSS_NAME, quote=False) in dom


@browser
@pytest.mark.browser
def test_report_screenshot_is_not_blank(report: tuple[Path, str], tmp_path: Path):
    path, _ = report
    shot = tmp_path / "shot.png"
    chromium(tmp_path, path, f"--screenshot={shot}", "--window-size=900,1100", "--hide-scrollbars")
    width, height, rows = read_png(shot)
    assert (width, height) == (900, 1100)
    bpp = len(rows[0]) // width
    pixels = {row[i : i + 3] for row in rows[::2] for i in range(0, len(row), bpp * 2)}
    assert len(pixels) > 50  # text, table, curves: not a blank page
    # the three runs' curve colours (tab10 blue, orange, green) are drawn: more pixels than swatches
    counts: dict[bytes, int] = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            counts[row[i : i + 3]] = counts.get(row[i : i + 3], 0) + 1
    for rgb in (b"\x1f\x77\xb4", b"\xff\x7f\x0e", b"\x2c\xa0\x2c"):
        assert counts.get(rgb, 0) > 400, (rgb, counts.get(rgb))


def test_the_report_never_replaces_a_link_fifo_or_device(sweep: SweepStore, tmp_path: Path):
    """The page is written to a temp file renamed over the output path: that would turn a FIFO, a
    device (`-o /dev/null` run as root) or a link (`-o /dev/stdout`) into a regular file. Each is
    refused with one line, and left as it was."""
    import stat as stat_mod

    box = tmp_path / "box"
    box.mkdir()
    target = box / "target.html"
    target.write_text("theirs")
    link, fifo, folder = box / "link.html", box / "fifo", box / "folder"
    link.symlink_to(target)
    os.mkfifo(fifo)
    folder.mkdir()
    paths = [link, fifo, folder]
    if os.geteuid() == 0:  # a node like /dev/null, made here rather than risking the real one
        device = box / "null"
        os.mknod(device, stat_mod.S_IFCHR | 0o666, os.makedev(1, 3))
        paths.append(device)
    before = {p: os.lstat(p) for p in paths}
    for path in paths:
        with pytest.raises(UsageError, match="not a regular file") as caught:
            build_report(sweep.store, "cnn-sweep", path)
        assert str(path) in caught.value.message and "\n" not in caught.value.message
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before[path].st_mode, before[path].st_ino), path
    assert target.read_text() == "theirs"
    assert sorted(p.name for p in box.iterdir()) == sorted(["target.html", *(p.name for p in paths)])


def test_a_negative_image_count_is_refused_before_anything_is_written(sweep: SweepStore, tmp_path: Path):
    out = tmp_path / "r.html"
    with pytest.raises(UsageError, match="--max-images-per-run -1: must not be negative"):
        build_report(sweep.store, "cnn-sweep", out, ReportOptions(max_images_per_run=-1))
    assert not out.exists()
