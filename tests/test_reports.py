"""Session reports: JUnit XML validated against a JUnit schema, the JSON report, and the
self-contained HTML page opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

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


@pytest.mark.browser
def test_html_report_in_headless_chromium(matrix_run, tmp_path):
    project, _, out = matrix_run
    page = out / "matrix.html"
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    browser = _chromium()
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # what the browser shows: 24 matrix rows, the page's own script ran and counted them
    assert len(re.findall(r'<tr class="cell"', dom)) == 24
    assert '<p id="rendered">24 cells shown: 1 failed, 23 passed</p>' in dom
    assert len(re.findall(r'<td class="status failed"', dom)) == 1
    # one chart per metric and script, with a line per target
    charts = re.findall(r'<svg class="chart" data-metric="(\w+)" data-script="([^"]+)"', dom)
    assert sorted(charts) == sorted((m, f"experiments/train_{s}.py") for m in ("accuracy", "loss") for s in "abc")
    assert dom.count("<polyline") == 12
    # links lead to each run's outputs (or run folder when a run wrote no outputs)
    links = re.findall(r'<a class="outputs" href="([^"]+)">(\d{8}-\d{6}-[0-9a-f]+)</a>', dom)
    assert len(links) == 24
    for href, run_id in links:
        target = (page.parent / unquote(href)).resolve()
        assert target.is_dir() and run_id in str(target)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p2'}",
                    f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # a page with content, not a blank canvas


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
