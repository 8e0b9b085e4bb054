"""The HTML report: one offline page with the matrix (filterable, sortable), per-step
curves, last-value charts suited to the parameters, failures with their log tails, and
each run's images, all embedded so the file works on its own (e.g. as a CI artifact)."""

from __future__ import annotations

import base64
import datetime
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.report_html import charts
from amlrun.report_html.assets import CSS, SCRIPT
from amlrun.sink import METRIC_PREFIX, read_metrics

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
DEFAULT_EMBED_LIMIT = 10 * 1024 * 1024
MAX_IMAGES_PER_RUN = 12
FAILED_OUTCOMES = ("failed", "error", "canceled")
esc = html.escape


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def _looks_like(kind: str, head: bytes) -> bool:
    """A file's first bytes match its extension (a script may name anything .png)."""
    if kind == "image/png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if kind == "image/jpeg":
        return head.startswith(b"\xff\xd8\xff")
    return b"<svg" in head.lower()


@dataclass
class Row:
    """One cell of the report with what the page shows about it."""

    report: Any
    index: int
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    images: list[tuple[str, str]] = field(default_factory=list)  # (name, data URI)

    @property
    def cell(self):
        return self.report.cell

    @property
    def anchor(self) -> str:
        return f"run-{self.report.run_id}" if self.report.run_id else f"cell-{self.index}"


def _read_series(run_dir: Path | None) -> dict[str, list[tuple[float, float]]]:
    if run_dir is None:
        return {}
    found: dict[str, list[tuple[float, float]]] = {}
    for row in read_metrics(run_dir):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            continue
        value = _numeric(row.get("value"))
        if value is None:
            continue
        points = found.setdefault(row["name"], [])
        step = _numeric(row.get("step"))
        points.append((step if step is not None else float(len(points)), value))
    return found


def _image_files(run_dir: Path | None) -> list[Path]:
    """Images in outputs/, without following a link out of the run's folder."""
    outputs = run_dir / "outputs" if run_dir is not None else None
    if outputs is None or outputs.is_symlink() or not outputs.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(outputs):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_TYPES and not path.is_symlink() and path.is_file():
                found.append(path)
    return found


class Embedder:
    """Images as data URIs until the page's budget is spent; what is left out is counted."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.left_out: list[tuple[str, int]] = []

    def add(self, row: Row) -> None:
        run_dir = row.report.run_dir
        for path in _image_files(run_dir)[:MAX_IMAGES_PER_RUN]:
            name = path.relative_to(run_dir).as_posix()
            size = path.stat().st_size
            encoded = (size + 2) // 3 * 4
            if self.used + encoded > self.limit:
                self.left_out.append((f"{row.cell.id}: {name}", size))
                continue
            kind = IMAGE_TYPES[path.suffix.lower()]
            data = path.read_bytes()
            if not _looks_like(kind, data[:512]):
                continue
            self.used += encoded
            row.images.append((name, f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"))


# -- charts --------------------------------------------------------------------------------------


def curve_charts(rows: list[Row]) -> list[str]:
    """One chart per metric that has steps (some run logged it more than once), a line per cell."""
    names: list[str] = []
    for row in rows:
        for name, points in row.series.items():
            if len(points) > 1 and name not in names:
                names.append(name)
    out = []
    for name in names:
        series = [
            charts.Series(row.cell.id, tuple(row.series[name]), row.index) for row in rows if row.series.get(name)
        ]
        legend = "".join(
            f'<li><span class="swatch" style="background:{charts.colour(s.index)}"></span>{esc(s.label)}</li>'
            for s in series
        )
        out.append(
            f'<figure class="curve">{charts.curves(name, f"{name} by step", series)}'
            f'<ul class="legend">{legend}</ul></figure>'
        )
    return out


def _varying(rows: list[Row]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for name, _ in row.cell.params.items:
            if name not in names:
                names.append(name)
    return [n for n in names if len({repr(r.cell.params.as_dict().get(n)) for r in rows}) > 1]


def _label(value: Any) -> str:
    return charts.fmt(value) if isinstance(value, float) else str(value)


def value_charts(rows: list[Row], metrics: list[str]) -> list[str]:
    """Per script and metric: a heatmap per target for a two-parameter grid, a scatter (a
    numeric parameter) or grouped bars (anything else), targets side by side."""
    scripts: dict[str, list[Row]] = {}
    for row in rows:
        scripts.setdefault(row.cell.script, []).append(row)
    out = []
    for script, group in scripts.items():
        targets = list(dict.fromkeys(r.cell.target for r in group))
        varying = _varying(group)
        if len(scripts) > 1:
            out.append(f'<h3 class="script">{esc(script)}</h3>')
        for metric in metrics:
            have = _last_values(group, metric)
            if not have:
                continue
            if len(varying) == 2:
                out.append(_heatmaps(script, metric, have, varying, targets))
            elif len(varying) == 1 and all(
                _numeric(r.cell.params.as_dict().get(varying[0])) is not None for r, _ in have
            ):
                out.append(_scatter_figure(script, metric, have, varying[0], targets))
            else:
                out.append(_bars_figure(script, metric, have, varying, targets))
    return out


def _last_values(group: list[Row], metric: str) -> list[tuple[Row, float]]:
    """The rows whose last value of ``metric`` is a finite number, with that value."""
    have = []
    for row in group:
        value = _numeric(row.report.metrics.get(metric))
        if value is not None:
            have.append((row, value))
    return have


def _heatmaps(script: str, metric: str, have: list[tuple[Row, float]], varying: list[str], targets: list[str]) -> str:
    """A two-parameter grid per target, on one colour scale."""
    xn, yn = varying
    xs = list(dict.fromkeys(_label(r.cell.params.as_dict()[xn]) for r, _ in have))
    ys = list(dict.fromkeys(_label(r.cell.params.as_dict()[yn]) for r, _ in have))
    low, high = min(v for _, v in have), max(v for _, v in have)
    maps = []
    for target in targets:
        values = {
            (_label(r.cell.params.as_dict()[xn]), _label(r.cell.params.as_dict()[yn])): v
            for r, v in have
            if r.cell.target == target
        }
        if values:
            maps.append(charts.heatmap(metric, f"{metric} · {target}", xn, yn, xs, ys, values, low, high))
    return f'<figure class="wide" data-script="{esc(script)}">{"".join(maps)}</figure>'


def _scatter_figure(script: str, metric: str, have: list[tuple[Row, float]], name: str, targets: list[str]) -> str:
    """Last values against the one (numeric) parameter that varies, a colour per target."""
    series = [
        charts.Series(t, tuple((float(r.cell.params.as_dict()[name]), v) for r, v in have if r.cell.target == t), k)
        for k, t in enumerate(targets)
    ]
    return (
        f'<figure data-script="{esc(script)}">'
        f"{charts.scatter(metric, metric, name, [s for s in series if s.points])}"
        f"{_target_legend(targets)}</figure>"
    )


def _bars_figure(
    script: str, metric: str, have: list[tuple[Row, float]], varying: list[str], targets: list[str]
) -> str:
    """Grouped bars: a group per value of the one parameter that varies (or per parameter set)."""

    def key(row: Row) -> str:
        if len(varying) == 1:
            return _label(row.cell.params.as_dict().get(varying[0]))
        return row.cell.params.id or "(no params)"

    groups = list(dict.fromkeys(key(r) for r, _ in have))
    series = [(t, k, {key(r): v for r, v in have if r.cell.target == t}) for k, t in enumerate(targets)]
    label = varying[0] if len(varying) == 1 else "parameter set"
    return (
        f'<figure data-script="{esc(script)}">{charts.bars(metric, metric, groups, series, label)}'
        f"{_target_legend(targets)}</figure>"
    )


def _target_legend(targets: list[str]) -> str:
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><span class="swatch" style="background:{charts.colour(k)}"></span>{esc(t)}</li>'
            for k, t in enumerate(targets)
        )
        + "</ul>"
    )


# -- the page ------------------------------------------------------------------------------------


def _wbr(text: str) -> str:
    """Escaped, with line-break chances after / _ - (long names wrap there, not mid-word)."""
    out = esc(text)
    for ch in "/_-":
        out = out.replace(ch, ch + "<wbr>")
    return out


def _matrix(rows: list[Row], params: list[str], metrics: list[str]) -> str:
    head = [
        ("script", "text"),
        ("target", "text"),
        *((p, "param") for p in params),
        ("status", "text"),
        ("duration (s)", "num"),
        *((m, "num") for m in metrics),
        ("run", "text"),
    ]
    ths = "".join(
        f'<th data-col="{i}" data-type="{kind}" class="{kind}" scope="col">'
        f'<button type="button">{_wbr(name)}</button></th>'
        for i, (name, kind) in enumerate(head)
    )
    body = []
    for row in rows:
        report, cell = row.report, row.cell
        values = cell.params.as_dict()
        tds = [f"<td>{_wbr(cell.script)}</td>", f"<td>{_wbr(cell.target)}</td>"]
        for p in params:
            v = values.get(p)
            num = _numeric(v)
            data = f' data-v="{num!r}"' if num is not None else ""
            tds.append(f'<td class="param"{data}>{"" if p not in values else esc(_label(v))}</td>')
        title = f' title="{esc(report.reason)}"' if report.reason else ""
        tds.append(f'<td class="status {report.outcome}"{title}>{esc(report.outcome)}</td>')
        tds.append(f'<td class="num" data-v="{report.duration:.3f}">{report.duration:.2f}</td>')
        for name in metrics:
            value = report.metrics.get(name)
            num = _numeric(value)
            data = f' data-v="{num!r}"' if num is not None else ""
            shown = "" if value is None else esc(_label(value))
            tds.append(f'<td class="num metric" data-metric="{esc(name)}"{data}>{shown}</td>')
        link = _wbr(report.run_id or "details")
        tds.append(f'<td class="run"><a class="runlink" href="#{row.anchor}">{link}</a></td>')
        body.append(
            f'<tr class="cell" data-status="{report.outcome}" data-cell="{esc(cell.id)}" '
            f'title="{esc(cell.id)}">{"".join(tds)}</tr>'
        )
    return (
        f'<div class="tools"><input id="filter" type="search" placeholder="filter cells: words, e.g. failed lr=0.1"'
        f' aria-label="filter the matrix"> <span id="rendered"></span></div>'
        f'<table id="matrix"><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _tail(report) -> str:
    """The log's last lines without metric lines (the charts show those)."""
    return "\n".join([line for line in report.log_tail if not line.startswith(METRIC_PREFIX)][-30:])


def _failures(rows: list[Row]) -> str:
    failed = [r for r in rows if r.report.outcome in FAILED_OUTCOMES]
    if not failed:
        return ""
    items = []
    for row in failed:
        report = row.report
        tail = _tail(report) or "(no output)"
        items.append(
            f'<div class="failure" data-cell="{esc(row.cell.id)}"><h3><a href="#{row.anchor}">'
            f'{esc(row.cell.id)}</a> <span class="badge {report.outcome}">{report.outcome}</span></h3>'
            f'<p class="reason">{esc(report.reason or report.outcome)}</p>'
            f'<pre class="tail">{esc(tail)}</pre></div>'
        )
    return f'<h2 id="failures">Failures ({len(failed)})</h2>' + "".join(items)


def _runs(rows: list[Row]) -> str:
    parts = []
    for row in rows:
        report = row.report
        if report.outcome == "skipped":
            continue
        metrics = ", ".join(f"{esc(k)}={esc(_label(v))}" for k, v in report.metrics.items())
        images = "".join(
            f'<figure class="image"><img alt="{esc(name)}" src="{uri}"><figcaption>{esc(name)}</figcaption></figure>'
            for name, uri in row.images
        )
        tail = _tail(report)
        log = (
            (
                f"<details{' open' if report.outcome in FAILED_OUTCOMES else ''}><summary>log tail</summary>"
                f'<pre class="tail">{esc(tail)}</pre></details>'
            )
            if tail
            else ""
        )
        folder = f'<p class="folder">run folder: <code>{esc(str(report.run_dir))}</code></p>' if report.run_dir else ""
        parts.append(
            f'<section class="run" id="{row.anchor}" data-cell="{esc(row.cell.id)}"><h3>{esc(row.cell.id)} '
            f'<span class="badge {report.outcome}">{report.outcome}</span></h3>'
            f"<p>{esc(report.run_id or '')} · {report.duration:.2f}s"
            f"{' · ' + esc(report.reason) if report.reason else ''}</p>"
            f"{f'<p>{metrics}</p>' if metrics else ''}{images and f'<div class=images>{images}</div>'}"
            f"{log}{folder}</section>"
        )
    return "".join(parts)


def render(session, duration: float, exitstatus: int, embed_limit: int = DEFAULT_EMBED_LIMIT) -> str:
    reports = session.reports
    rows = [Row(report, i, _read_series(report.run_dir)) for i, report in enumerate(reports)]
    embedder = Embedder(embed_limit)
    for row in rows:
        embedder.add(row)
    metrics = list(dict.fromkeys(n for r in reports for n in r.metrics))
    params = list(dict.fromkeys(n for r in reports for n, _ in r.cell.params.items))
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    badges = "".join(f'<span class="badge {o}">{n} {o}</span>' for o, n in counts.items())
    curves = curve_charts(rows)
    values = value_charts(rows, metrics)
    note = ""
    if embedder.left_out:
        total = sum(size for _, size in embedder.left_out)
        listed = "".join(f"<li>{esc(name)} ({_size(size)})</li>" for name, size in embedder.left_out[:50])
        note = (
            f'<div class="note" id="left-out"><p>{len(embedder.left_out)} image'
            f"{'s' * (len(embedder.left_out) != 1)} ({_size(total)}) not embedded: over the page's limit of "
            f"{_size(embed_limit)} (--html-embed-limit). They are in the runs' outputs/ folders.</p>"
            f"<ul>{listed}</ul></div>"
        )
    title = f"amlrun report: {session.project.root.name}"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stopped = f"<p><b>{esc(session.shouldstop)}</b></p>" if session.shouldstop else ""
    curve_html = f'<div class="charts">{"".join(curves)}</div>' if curves else "<p>no metric was logged over steps</p>"
    value_html = f'<div class="charts">{"".join(values)}</div>' if values else "<p>no numeric metrics were logged</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><header><h1>{esc(title)}</h1>
<p>{when} · {len(reports)} cells · {duration:.1f}s · exit status {exitstatus} · {badges}</p>{stopped}</header>
<nav><a href="#matrix-h">matrix</a> · <a href="#failures">failures</a> · <a href="#curves">curves</a> ·
<a href="#values">last values</a> · <a href="#runs">runs</a></nav>
<h2 id="matrix-h">Matrix</h2>
{_matrix(rows, params, metrics)}
{_failures(rows)}
<h2 id="curves">Metrics by step</h2>
{curve_html}
<h2 id="values">Last values</h2>
{value_html}
<h2 id="runs">Runs</h2>
{note}{_runs(rows)}
<script>{SCRIPT}</script>
</body></html>
"""
