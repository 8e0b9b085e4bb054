"""``amlrun history export mlflow [RUN ...]``: send past runs, skipping those already there."""

from __future__ import annotations

import sys

from amlrun.errors import UsageError
from amlrun_mlflow.settings import read_settings


def export_runs(config, store, records) -> int:
    from amlrun_mlflow.export import Exporter, Unreachable, check_reachable, register_secrets

    settings = read_settings(config.project)
    if settings is None:
        raise UsageError(
            "history export mlflow: MLflow export is off; set MLFLOW_TRACKING_URI or "
            "[tool.amlrun.mlflow] tracking_uri in pyproject.toml"
        )
    register_secrets()
    try:
        check_reachable(settings)
        exporter = Exporter(settings)
        existing = exporter.existing(r.run_id for r in records) if records else {}
    except Unreachable as exc:
        raise UsageError(f"history export mlflow: {exc}") from None
    exported = skipped = failed = 0
    for record in records:
        found = existing.get(record.run_id)
        if found is not None and found[1]:
            skipped += 1
            continue
        try:
            mlflow_run_id = exporter.finish(
                record, store.run_dir(record.run_id), found[0] if found else None, resumed=found is not None
            )
        except Exception as exc:  # one run's problem is reported, the others still go
            failed += 1
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"run {record.run_id}: not exported: {text}", file=sys.stderr)
            continue
        exported += 1
        shown = exporter.run_url(mlflow_run_id) if settings.is_http else mlflow_run_id
        print(f"{record.run_id} {record.cell_id} -> {shown}")
    print(
        f"exported {exported} run{'s' * (exported != 1)} to MLflow experiment '{settings.experiment}' at "
        f"{settings.shown_uri}; {skipped} already there" + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0
