"""Turning one amlrun run (its record and folder) into one MLflow run.

Only this module imports mlflow, and only when export is on. An MLflow run carries the
tag ``amlrun.run_id`` from its creation and ``amlrun.exported`` once everything was
sent, so a later export finds what is done, and resumes into (never duplicates) a run
that was created but not finished when the server went away.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amlrun.secrets import redactor
from amlrun.store import RunRecord
from amlrun_mlflow.settings import MlflowSettings

RUN_ID_TAG = "amlrun.run_id"
EXPORTED_TAG = "amlrun.exported"
STATUS = {"completed": "FINISHED", "failed": "FAILED", "canceled": "KILLED"}
LEFT_OUT_FILE = "amlrun-left-out.txt"
ROOT_FILES = ("log.txt", "environment.txt")
MAX_PARAM = 6000  # MLflow's limit for a param value
MAX_TAG = 5000  # kept below MLflow's limit for a tag value
BATCH = 1000  # MLflow's limit of metrics in one log_batch
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


_QUIET = threading.Lock()


class Unreachable(Exception):
    """The tracking server did not answer (or refused what was sent)."""


def check_reachable(settings: MlflowSettings, timeout: float = 5.0) -> None:
    """A quick ``/health`` probe, so an unreachable server costs seconds, not the client's retries."""
    if not settings.is_http:
        return
    url = settings.tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's own server
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise Unreachable(f"{settings.shown_uri} answered HTTP {exc.code}") from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{settings.shown_uri} is unreachable ({reason})") from None


def register_secrets() -> None:
    """Credentials of the tracking server itself are masked like any other secret."""
    for name in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        if os.environ.get(name):
            redactor.add(os.environ[name])
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    match = re.match(r"^[a-z+]+://[^:/@]+:([^@/]+)@", uri)
    if match:
        redactor.add(match.group(1))


def key(name: str) -> str:
    """A param/metric name MLflow accepts (it allows letters, digits, _ - . space /)."""
    return _KEY_BAD.sub("_", name)[:250] or "_"


def _clip(text: str, limit: int) -> str:
    text = redactor(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _clip(text, MAX_PARAM)


def tags_for(record: RunRecord) -> dict[str, str]:
    tags = {
        RUN_ID_TAG: record.run_id,
        "amlrun.cell_id": record.cell_id,
        "amlrun.script": record.script,
        "amlrun.target": record.target,
        "amlrun.target_type": record.target_type,
        "amlrun.runconfig": record.runconfig,
        "amlrun.version": record.amlrun_version,
        "amlrun.host": record.host,
        "amlrun.status": record.status,
        "mlflow.source.name": record.script,
        "mlflow.source.type": "LOCAL",
    }
    optional = {
        "amlrun.git_commit": record.git_commit,
        "mlflow.source.git.commit": record.git_commit,
        "amlrun.git_dirty": None if record.git_dirty is None else str(record.git_dirty).lower(),
        "amlrun.snapshot_digest": record.snapshot_digest,
        "amlrun.environment_digest": record.environment_digest,
        "amlrun.environment_packages": (record.extra or {}).get("environment_packages"),
        "amlrun.exit_code": None if record.exit_code is None else str(record.exit_code),
        "amlrun.reason": record.reason or None,
    }
    tags.update({k: v for k, v in optional.items() if v})
    return {k: _clip(str(v), MAX_TAG) for k, v in tags.items()}


def metric_points(run_dir: Path) -> list[tuple[str, float, int, int]]:
    """Every logged point as (key, value, timestamp ms, step); a point without a step
    gets its position in that metric's series."""
    from amlrun.sink import read_metrics

    counts: dict[str, int] = {}
    points = []
    for row in read_metrics(run_dir):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            continue
        value = _number(row.get("value"))
        if value is None:
            continue
        name = key(row["name"])
        index = counts.get(name, 0)
        counts[name] = index + 1
        step = row.get("step")
        step = (
            int(step)
            if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
            else index
        )
        stamp = row.get("time")
        millis = int(float(stamp) * 1000) if isinstance(stamp, (int, float)) else int(time.time() * 1000)
        points.append((name, value, millis, step))
    return points


@dataclass(frozen=True)
class Staged:
    folder: Path
    files: int
    size: int
    left_out: tuple[str, ...]


def _files(run_dir: Path) -> Iterable[tuple[str, Path]]:
    """(artifact path, file) for log.txt, environment.txt and outputs/, never following a link."""
    for name in ROOT_FILES:
        path = run_dir / name
        if path.is_file() and not path.is_symlink():
            yield name, path
    outputs = run_dir / "outputs"
    if outputs.is_dir() and not outputs.is_symlink():
        for dirpath, dirnames, filenames in os.walk(outputs):
            dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(run_dir).as_posix(), path


def stage(run_dir: Path, limit: int, into: Path) -> Staged:
    """Copy what will be uploaded into ``into``: redacted, within ``limit`` bytes (the
    log first, then the environment, then outputs in path order; what does not fit is
    listed in ``amlrun-left-out.txt``)."""
    total, count, left_out = 0, 0, []
    for rel, path in _files(run_dir):
        size = path.stat().st_size
        if total + size > limit:
            left_out.append(f"{rel}\t{size} bytes")
            continue
        dest = into / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        if redactor:
            text = data.decode("utf-8", "surrogateescape")
            masked = redactor(text)
            if masked != text:
                data = masked.encode("utf-8", "surrogateescape")
        dest.write_bytes(data)
        total += len(data)
        count += 1
    if left_out:
        (into / LEFT_OUT_FILE).write_text(
            f"left out: over the per-run limit of {limit} bytes (max_artifact_size in [tool.amlrun.mlflow])\n"
            + "\n".join(left_out)
            + "\n",
            encoding="utf-8",
        )
    return Staged(into, count, total, tuple(left_out))


class Exporter:
    """One tracking server and experiment; safe to use from several worker threads."""

    def __init__(self, settings: MlflowSettings):
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)
        self._lock = threading.Lock()
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        with self._lock:
            if self._experiment_id is None:
                found = self.client.get_experiment_by_name(self.settings.experiment)
                if found is None:
                    try:
                        self._experiment_id = self.client.create_experiment(self.settings.experiment)
                    except Exception:  # created meanwhile by another process
                        found = self.client.get_experiment_by_name(self.settings.experiment)
                        if found is None:
                            raise
                        self._experiment_id = found.experiment_id
                else:
                    if found.lifecycle_stage == "deleted":
                        self.client.restore_experiment(found.experiment_id)
                    self._experiment_id = found.experiment_id
            return self._experiment_id

    def run_url(self, mlflow_run_id: str) -> str:
        base = self.settings.tracking_uri.rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{mlflow_run_id}"

    def start(self, record: RunRecord) -> str:
        """Create the MLflow run for ``record`` (params and tags now, so the script's own
        mlflow calls see them) and return its id."""
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            start_time=int(time.time() * 1000),
            tags=tags_for(record),
            run_name=_clip(record.cell_id, 250),
        )
        params = [Param(key(k), param_text(v)) for k, v in record.params.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])
        return run.info.run_id

    def existing(self, run_ids: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """amlrun run id → (MLflow run id, fully exported) for runs already in the experiment."""
        wanted = set(run_ids)
        found: dict[str, tuple[str, bool]] = {}
        token = None
        while wanted:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` != ''", max_results=1000, page_token=token
            )
            for run in page:
                amlrun_id = run.data.tags.get(RUN_ID_TAG)
                if amlrun_id in wanted:
                    done = run.data.tags.get(EXPORTED_TAG) == "true"
                    if amlrun_id not in found or done:
                        found[amlrun_id] = (run.info.run_id, done)
            token = page.token
            if not token:
                break
        return found

    def finish(self, record: RunRecord, run_dir: Path, mlflow_run_id: str | None = None, resumed: bool = False) -> str:
        """Send the run's metrics, tags and artifacts and close it with its status."""
        from mlflow.entities import Metric, Param, RunTag

        if mlflow_run_id is None:
            mlflow_run_id = self.start(record)
        elif resumed:  # created earlier and not finished: params may be missing
            have = self.client.get_run(mlflow_run_id).data.params
            params = [Param(key(k), param_text(v)) for k, v in record.params.items() if key(k) not in have]
            for i in range(0, len(params), 100):
                self.client.log_batch(mlflow_run_id, params=params[i : i + 100])
        points = metric_points(run_dir)
        if resumed:  # what an interrupted export already sent is not sent twice
            seen = set()
            for name in {p[0] for p in points}:
                seen |= {
                    (m.key, m.timestamp, m.step, m.value) for m in self.client.get_metric_history(mlflow_run_id, name)
                }
            points = [p for p in points if (p[0], p[2], p[3], p[1]) not in seen]
        metrics = [Metric(name, value, millis, step) for name, value, millis, step in points]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(mlflow_run_id, metrics=metrics[i : i + BATCH])
        with tempfile.TemporaryDirectory(prefix="amlrun-mlflow-") as tmp:
            staged = stage(run_dir, self.settings.max_artifact_size, Path(tmp))
            if staged.files or staged.left_out:
                self.client.log_artifacts(mlflow_run_id, tmp)
        tags = {**tags_for(record), EXPORTED_TAG: "true"}
        if staged.left_out:
            tags["amlrun.artifacts_left_out"] = str(len(staged.left_out))
        tag_list = [RunTag(k, v) for k, v in tags.items()]
        self.client.log_batch(mlflow_run_id, tags=tag_list)
        end = int((record.ended or time.time()) * 1000)
        with _QUIET:  # the client prints "View run ... at: URL" on stdout, into amlrun's terminal
            with contextlib.redirect_stdout(io.StringIO()):
                self.client.set_terminated(mlflow_run_id, status=STATUS.get(record.status, "FAILED"), end_time=end)
        return mlflow_run_id
