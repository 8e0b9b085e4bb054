"""Session reports: JUnit XML validated against a JUnit schema, the JSON report, and the
self-contained HTML page opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import require_service

SCHEMA = Path(__file__).parent / "data" / "junit.xsd"

# 3 scripts × 4 parameter sets × 2 targets = 24 cells; one cell (train_c on cpu) fails with a known log tail.
SCRIPT = """
import os, sys
AMLRUN_PARAMS = {{"lr": [0.1, 0.01], "depth": [2, 4]}}
from amlrun_client import log
lr = float(sys.argv[sys.argv.index("--lr") + 1])
depth = int(sys.argv[sys.argv.index("--depth") + 1])
print("training", lr, depth)
log("accuracy", round({base} + lr + depth / 100, 4))
log("loss", round(1 - lr, 4))
if {fails} and lr == 0.01 and depth == 4 and os.environ["AMLRUN_TARGET"] == "cpu":
    print("diverged: loss is nan")
    sys.exit(3)
"""

MATRIX = {
    "experiments/train_a.py": SCRIPT.format(base=0.5, fails=False),
    "experiments/train_b.py": SCRIPT.format(base=0.6, fails=False),
    "experiments/train_c.py": SCRIPT.format(base=0.7, fails=True),
    "aml_config/cpu.compute": "type: local\nmaxParallel: 2\n",
    "aml_config/small.compute": "type: local\nmaxParallel: 1\n",
}


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    """The matrix run once with -n 4 and every report; the tests below read its outputs."""
    from conftest import Project

    root = tmp_path_factory.mktemp("reports") / "proj"
    (root / "aml_config").mkdir(parents=True)
    project = Project(root).write(MATRIX)
    out = root / "reports"
    result = project.run("-c", "cpu", "-c", "small", "-n", "4", "--junitxml", "reports/junit.xml",
                         "--report-json", str(out / "report.json"), "--html", "reports/matrix.html")
    return project, result, out


def test_matrix_records_24_runs(matrix_run):
    project, result, _ = matrix_run
    assert result.returncode == 1, result.output
    assert "23 passed, 1 failed" in result.stdout
    records = [json.loads(p.read_text()) for p in (project.root / ".amlrun/runs").glob("*/record.json")]
    assert len(records) == 24
    assert sorted(r["status"] for r in records) == ["completed"] * 23 + ["failed"]
    assert {r["target"] for r in records} == {"cpu", "small"}


def test_junitxml_is_valid_and_complete(matrix_run):
    xmlschema = pytest.importorskip("xmlschema")
    project, _, out = matrix_run
    path = out / "junit.xml"
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(path))
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("24", "1", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 24
    assert cases[0].get("classname") == "experiments.train_a"
    assert cases[0].get("name") == "cpu[lr=0.1-depth=2]"
    props = {p.get("name"): p.get("value") for p in cases[0].find("properties")}
    assert props["target"] == "cpu" and props["param.lr"] == "0.1"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]+", props["run_id"])
    assert (project.root / ".amlrun/runs" / props["run_id"]).is_dir()
    assert float(props["metric.accuracy"]) == pytest.approx(0.62)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("experiments.train_c", "cpu[lr=0.01-depth=4]")]
    failure = failed[0].find("failure")
    assert failure.get("message") == "exited with code 3"
    assert "diverged: loss is nan" in failure.text


def test_junit_schema_rejects_malformed_reports(tmp_path):
    """The schema is strict enough to mean something."""
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(SCHEMA))
    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="s" tests="1" failures="0">'
                   '<testcase name="c" classname="k" time="0.1"/></testsuite></testsuites>')
    assert not schema.is_valid(str(bad))  # errors= missing
    bad.write_text('<testsuites><testsuite name="s" tests="1" failures="0" errors="0">'
                   '<testcase name="c" classname="k" time="soon"/></testsuite></testsuites>')
    assert not schema.is_valid(str(bad))


def test_json_report_lists_every_cell_in_matrix_order(matrix_run):
    project, result, out = matrix_run
    data = json.loads((out / "report.json").read_text())
    assert data["exitstatus"] == 1 and data["summary"] == {"passed": 23, "failed": 1}
    cells = data["cells"]
    assert len(cells) == 24
    ids = [c["id"] for c in cells]
    plan = project.run("-c", "cpu", "-c", "small", "--collect-only")
    assert ids == [line for line in plan.stdout.splitlines() if "::" in line]
    for cell in cells:
        assert cell["record"]["run_id"] == cell["run_id"]
        assert cell["record"]["cell_id"] == cell["id"]
        assert cell["metrics"]["loss"] == cell["record"]["metrics"]["loss"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        require_service("chromium", "install Debian's chromium (.ci/services/browser.sh)")
    return found


def _browser(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--window-size=1366,900", *extra, url],
        capture_output=True, text=True, timeout=120,
    )


def dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in a 1,366 px wide window."""
    proc = _browser(url, profile, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def no_network(text: str) -> None:
    assert "https://" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<link" not in text and not re.search(r"<script[^>]*\bsrc=", text) and "<iframe" not in text


@pytest.mark.browser
def test_html_report_of_the_24_cell_matrix(matrix_run, tmp_path):
    """Two parameters: each metric's last values are a heatmap per target, side by side."""
    _, _, out = matrix_run
    page = out / "matrix.html"
    no_network(page.read_text())
    shown = dom(page.as_uri(), tmp_path / "profile")
    assert len(re.findall(r'<tr class="cell"', shown)) == 24
    assert '<span id="rendered">24 cells shown: 1 failed, 23 passed</span>' in shown
    heatmaps = re.findall(r'<svg class="chart" data-kind="heatmap" data-metric="(\w+)"[^>]*aria-label="[\w.]+ · (\w+)"',
                          shown)
    assert sorted(heatmaps) == sorted((m, t) for m in ("accuracy", "loss") for t in ("cpu", "small") for _ in range(3))
    assert shown.count('<rect class="heat"') == 3 * 2 * 2 * 4  # scripts × metrics × targets × (lr, depth) cells
    # the matrix links to each run's section on the page (works when the file is downloaded alone)
    links = re.findall(r'<a class="runlink" href="#run-([^"]+)">', shown)
    assert len(links) == 24 and all(f'<section class="run" id="run-{r}"' in shown for r in links)


# A 4-parameter (2 varying), 3-metric sweep on two targets, plus a one-parameter script
# (scatter) and a categorical one (bars); runs write PNG, JPEG and SVG images, a file
# that only calls itself .png, a link to an image outside the run, and one large image.
def _png(width: int, height: int) -> bytes:
    """A real PNG (RGB, a blue-green gradient)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(c for x in range(width) for c in (20, 4 * x % 256, 200)) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = _png(64, 32)
JPEG = ("/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP////////////////////////////////////////////////////////////////"
        "//////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=")
SWEEP = {
    "aml_config/cpu.compute": "type: local\nmaxParallel: 2\n",
    "aml_config/gpu.compute": "type: local\nmaxParallel: 2\n",
    "experiments/sweep.py": f"""
import base64, os, sys
AMLRUN_PARAMS = {{"learning_rate": [0.1, 0.01, 0.001], "depth": [2, 4], "optimizer": ["adam"], "batch_size": [32]}}
from amlrun_client import log
arg = lambda n: sys.argv[sys.argv.index("--" + n) + 1]
lr, depth = float(arg("learning_rate")), int(arg("depth"))
for step in range(10):
    log("training_loss", round((1 - lr) / (step + 1) + depth / 100, 4), step=step)
log("validation_accuracy", round(0.7 + lr + depth / 50, 4))
log("throughput_samples_per_second", 1000 * depth)
os.makedirs("outputs/plots", exist_ok=True)
open("outputs/plots/curve.png", "wb").write({PNG!r})
open("outputs/photo.jpg", "wb").write(base64.b64decode({JPEG!r}))
open("outputs/diagram.svg", "w").write('<svg xmlns="http://www.w3.org/2000/svg" width="90" height="40">'
                                       '<rect width="90" height="40" fill="#9cf"/><text x="6" y="25">lr ' + str(lr) + '</text></svg>')
open("outputs/notes.png", "w").write("not an image")
if lr == 0.1 and depth == 2:
    os.symlink("/etc/hostname", "outputs/outside.png")
    open("outputs/huge.png", "wb").write({PNG!r} + b"\\0" * 200_000)
if lr == 0.001 and depth == 4 and os.environ["AMLRUN_TARGET"] == "gpu":
    print("diverged: loss is nan")
    sys.exit(3)
""",
    "experiments/probe.py": """
AMLRUN_PARAMS = {"width": [8, 16, 64, 256]}
import sys
from amlrun_client import log
log("score", int(sys.argv[sys.argv.index("--width") + 1]) ** 0.5)
""",
    "experiments/pick.py": """
AMLRUN_PARAMS = {"model": ["tree", "forest", "boost"]}
import sys
from amlrun_client import log
log("score", len(sys.argv[sys.argv.index("--model") + 1]))
""",
}


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory):
    from conftest import Project

    root = tmp_path_factory.mktemp("sweep") / "proj"
    (root / "aml_config").mkdir(parents=True)
    project = Project(root).write(SWEEP)
    result = project.run("-c", "cpu", "-c", "gpu", "-n", "2", "--html", "report.html", "--html-embed-limit", "100KB")
    assert result.returncode == 1, result.output
    assert "25 passed, 1 failed" in result.stdout
    return root / "report.html"


@pytest.mark.browser
def test_html_report_charts_failures_and_images(sweep_page, tmp_path):
    text = sweep_page.read_text()
    no_network(text)
    shown = dom(sweep_page.as_uri(), tmp_path / "profile")
    assert len(re.findall(r'<tr class="cell"', shown)) == 26
    # per-step curves: one chart for the metric logged over steps, one line per cell that logged it
    (curve,) = re.findall(r'<svg class="chart" data-kind="curve" data-metric="(\w+)"', shown)
    assert curve == "training_loss"
    assert shown.count('<polyline class="series"') == 12
    # two varying parameters: a heatmap per metric and target, 3 × 2 cells each
    heat = re.findall(r'data-kind="heatmap" data-metric="(\w+)"', shown)
    assert sorted(heat) == sorted(["training_loss", "validation_accuracy", "throughput_samples_per_second"] * 2)
    assert shown.count('<rect class="heat"') == 6 * 6
    # one numeric parameter: a scatter, both targets' points visible side by side
    scatter = re.findall(r'<figure data-script="experiments/probe.py"><svg class="chart" data-kind="scatter"', shown)
    assert len(scatter) == 1
    points = re.findall(r'<circle class="point" data-series="(\w+)" cx="([\d.]+)" cy="([\d.]+)"', shown)
    assert len(points) == 8
    assert len({(cx, cy) for _, cx, cy in points}) == 8  # no point hidden behind another target's
    # a categorical parameter: grouped bars, a bar per target in each group
    assert len(re.findall(r'<figure data-script="experiments/pick.py"><svg class="chart" data-kind="bars"', shown)) == 1
    bars = re.findall(r'<rect class="bar" data-series="(\w+)"', shown)
    assert sorted(bars) == ["cpu"] * 3 + ["gpu"] * 3
    # the failed cell: reason and log tail on the page
    failure = re.search(r'<div class="failure" data-cell="([^"]+)">(.*?)</div>', shown, re.S)
    assert failure.group(1) == "experiments/sweep.py::gpu[learning_rate=0.001-depth=4-optimizer=adam-batch_size=32]"
    assert "exited with code 3" in failure.group(2) and "diverged: loss is nan" in failure.group(2)
    # images embedded with their runs; a fake .png and a link out of the run are not shown
    for kind, name in (("png", "outputs/plots/curve.png"), ("jpeg", "outputs/photo.jpg"),
                       ("svg+xml", "outputs/diagram.svg")):
        assert len(re.findall(rf'<img alt="{name}" src="data:image/{re.escape(kind)};base64,', shown)) >= 1
    assert 'alt="outputs/notes.png"' not in shown and 'alt="outputs/outside.png"' not in shown
    # what did not fit the 100 KB budget is named
    note = re.search(r'<div class="note" id="left-out">(.*?)</div>', shown, re.S).group(1)
    assert "not embedded: over the page's limit of 100 KB (--html-embed-limit)" in note
    assert "outputs/huge.png" in note
    assert len(text) < 400_000


@pytest.mark.browser
def test_html_matrix_fits_1366_and_filters_and_sorts(sweep_page, tmp_path):
    shown = dom(sweep_page.as_uri(), tmp_path / "p1")
    body = re.search(r'<body data-table-width="(\d+)" data-page-width="(\d+)"', shown)
    assert int(body.group(1)) <= 1366 and int(body.group(2)) <= 1366  # no horizontal scrolling
    header = re.findall(r'<th data-col="\d+" data-type="(\w+)"', shown)
    assert header.count("param") == 6 and header.count("num") == 1 + 4  # duration and the 4 metrics
    # the filter box (its state in the address): words must all match
    filtered = dom(sweep_page.as_uri() + "#filter=gpu%20failed", tmp_path / "p2")
    visible = re.findall(r'<tr class="cell" data-status="(\w+)" data-cell="([^"]+)"[^>]*?(hidden="")?>', filtered)
    assert [(s, c) for s, c, hidden in visible if not hidden] == [
        ("failed", "experiments/sweep.py::gpu[learning_rate=0.001-depth=4-optimizer=adam-batch_size=32]")]
    assert '<span id="rendered">1 of 26 cells shown: 1 failed</span>' in filtered
    assert 'id="filter"' in filtered
    # sorting by a metric column, descending; cells without the metric go last
    ordered = dom(sweep_page.as_uri() + "#sort=validation_accuracy:desc", tmp_path / "p3")
    assert '<th data-col="' in ordered and 'aria-sort="descending"' in ordered
    values = re.findall(r'<td class="num metric" data-metric="validation_accuracy"(?: data-v="([^"]+)")?>', ordered)
    numbers = [float(v) for v in values if v]
    assert len(numbers) == 12 and numbers == sorted(numbers, reverse=True)
    assert values[:12] == [v for v in values if v] and not any(values[12:])
    by_param = dom(sweep_page.as_uri() + "#sort=learning_rate:asc", tmp_path / "p4")
    lrs = [float(v) for v in re.findall(r'<td class="param" data-v="([^"]+)">[\d.e-]+</td><td class="param" data-v="[24].0"',
                                       by_param)]
    assert lrs == sorted(lrs) and len(lrs) == 12


@pytest.mark.browser
def test_html_report_screenshots(sweep_page, matrix_run, tmp_path):
    """Screenshots of both reports at 1,366 × 900 (kept in the test's folder for a look)."""
    for name, page in (("sweep", sweep_page), ("matrix", matrix_run[2] / "matrix.html")):
        shot = tmp_path / f"{name}.png"
        proc = _browser(page.as_uri(), tmp_path / f"profile-{name}", f"--screenshot={shot}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_unwritable_report_path_is_one_line_and_other_reports_are_written(project, tmp_path):
    project.write({"exp/a.py": "import sys\nsys.exit(1)\n"})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = project.run("--junitxml", str(blocker / "junit.xml"), "--report-json", "out/r.json")
    assert result.returncode == 4
    assert re.fullmatch(rf"amlrun: error: --junitxml {re.escape(str(blocker / 'junit.xml'))}: cannot write: [^\n]+",
                        result.stderr.strip())
    assert json.loads((project.root / "out/r.json").read_text())["cells"][0]["outcome"] == "failed"
    # the session's own bookkeeping still happened: --lf knows the failure
    assert "rerun previous 1 failure" in project.run("--lf").stdout
