"""``azureml.dataprep.package.run``: Workbench Data Prep packages on local files.

A ``.dprep`` / ``.dsource`` file is JSON: ``activities`` (the dataflows), each a list of
``blocks`` applied in order (``{"type": "Microsoft.DPrep.<Name>Block", "arguments":
{...}}``). The block types here are the ones Workbench's own Iris sample uses; any other
type stops the run with one line naming it, rather than returning different data.

Runconfig settings reach the run as ``AMLRUN_DATAPREP_SETTINGS`` (JSON):
``UseSampling`` (default true: the active sample of a ``SampleBlock`` applies),
``DataSourceSettings`` (``{file: {"Sampling": {"Sample": name}}}``, which sample to use) and
``DataSourceSubstitutions`` (``{file: replacement}``, a ``.dsource`` read instead of another).
"""

import csv
import io
import json
import os
import random

__all__ = ["run", "DataPrepError"]

SETTINGS_VARIABLE = "AMLRUN_DATAPREP_SETTINGS"
PATH_COLUMN = "Path"
_LOCAL_FILE = "\0local"  # the data source step: (Path, local file) rows

# Workbench enum values, as they appear in the sample packages.
_HEADERS_NONE = 0                       # columnHeadersMode: 0 none (Column1..N), 1-3 first row
_ENCODINGS = {0: "utf-8", 1: "iso-8859-1", 2: "latin-1", 3: "ascii", 4: "utf-16", 5: "utf-32",
              6: "utf-8-sig", 7: "cp1252"}
_TYPE_STRING, _TYPE_BOOLEAN, _TYPE_INTEGER, _TYPE_DECIMAL, _TYPE_DATE = 0, 1, 2, 3, 4
_SAMPLE_TOP, _SAMPLE_RANDOM_N, _SAMPLE_RANDOM_PERCENT, _SAMPLE_FULL = 0, 1, 2, 3
_FILTER_KEEP, _FILTER_REMOVE = 0, 1     # filterResult
_CLAUSES_OR, _CLAUSES_AND = 0, 1        # clauseRelationship
_OPERATOR_IS_NULL = 2                   # a clause without a value: the cell is missing or empty


class DataPrepError(Exception):
    """A package amlrun cannot execute faithfully; the message is one line naming the file and what."""


class _Table:
    """Rows of text (or typed) values with named columns: what a dataflow carries between blocks."""

    def __init__(self, columns, rows):
        self.columns = list(columns)
        self.rows = rows

    def index(self, column, where):
        try:
            return self.columns.index(column)
        except ValueError:
            raise DataPrepError(f"{where}: no column {column!r} (columns: {', '.join(self.columns)})") from None


def run(path, dataflow_idx=0, spark=False):
    """Execute dataflow ``dataflow_idx`` of the package at ``path``; a pandas DataFrame
    (a Spark DataFrame of the run's Spark session when ``spark=True``)."""
    settings = _settings()
    table = _run_file(_substitute(str(path), settings), dataflow_idx, settings, depth=0)
    import pandas

    frame = pandas.DataFrame({name: [row[i] for row in table.rows] for i, name in enumerate(table.columns)},
                             columns=table.columns)
    if not spark:
        return frame
    return _to_spark(frame, path)


def _settings():
    text = os.environ.get(SETTINGS_VARIABLE)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise DataPrepError(f"{SETTINGS_VARIABLE} is not JSON") from None
    return value if isinstance(value, dict) else {}


def _substitute(path, settings):
    substitutions = settings.get("DataSourceSubstitutions") or {}
    for original, replacement in substitutions.items():
        if os.path.normpath(original) == os.path.normpath(path):
            return str(replacement)
    return path


def _run_file(path, dataflow, settings, depth, activity_id=None):
    if depth > 20:
        raise DataPrepError(f"{path}: references nest more than 20 deep (a cycle?)")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            package = json.load(fh)
    except FileNotFoundError:
        raise DataPrepError(f"{path}: no such Data Prep file") from None
    except ValueError as exc:
        raise DataPrepError(f"{path}: not a Data Prep file (invalid JSON: {exc})") from None
    activities = package.get("activities") if isinstance(package, dict) else None
    if not isinstance(activities, list) or not activities:
        raise DataPrepError(f"{path}: not a Data Prep file (no 'activities')")
    if activity_id is not None:
        chosen = [a for a in activities if isinstance(a, dict) and a.get("id") == activity_id]
        if not chosen:
            raise DataPrepError(f"{path}: has no dataflow with id {activity_id}")
        activity = chosen[0]
    else:
        if not isinstance(dataflow, int) or not 0 <= dataflow < len(activities):
            raise DataPrepError(f"{path}: dataflow_idx {dataflow!r} out of range (the file has {len(activities)})")
        activity = activities[dataflow]
    table = None
    base = os.path.dirname(path)
    for number, block in enumerate(activity.get("blocks") or [], 1):
        kind = str(block.get("type", "")) if isinstance(block, dict) else ""
        handler = _BLOCKS.get(kind)
        where = f"{path}: block {number} ({kind or 'no type'})"
        if handler is None:
            raise DataPrepError(f"{path}: block {number} has type {kind or '(none)'}, which amlrun's "
                                f"azureml.dataprep does not execute (it runs {', '.join(sorted(_BLOCKS))})")
        if table is None and kind not in _SOURCES:
            raise DataPrepError(f"{where}: comes before any data source")
        table = handler(table, block.get("arguments") or {}, _Context(path, base, where, settings, depth))
    if table is None:
        raise DataPrepError(f"{path}: the dataflow has no data source")
    return table


class _Context:
    def __init__(self, path, base, where, settings, depth):
        self.path, self.base, self.where, self.settings, self.depth = path, base, where, settings, depth


def _reference(table, args, ctx):
    ref = args.get("reference") or {}
    target = ref.get("referenceContainerPath")
    if not target:
        raise DataPrepError(f"{ctx.where}: refers to no file (only references to another .dsource/.dprep are run)")
    target = str(target)
    if not os.path.isabs(target):
        target = os.path.normpath(os.path.join(ctx.base, target))
    target = _substitute(target, ctx.settings)
    return _run_file(target, 0, ctx.settings, ctx.depth + 1, activity_id=ref.get("referencedActivityId"))


def _data_source(table, args, ctx):
    spec = args.get("path") or {}
    if spec.get("target", 0) != 0:
        raise DataPrepError(f"{ctx.where}: the data source is not a local file (target {spec.get('target')!r})")
    files = [d.get("path") for d in spec.get("resourceDetails") or [] if isinstance(d, dict)]
    if not files:
        raise DataPrepError(f"{ctx.where}: names no file")
    found = []
    for name in files:
        local = str(name)
        if not os.path.isabs(local) and not (len(local) > 1 and local[1] == ":"):
            local = os.path.normpath(os.path.join(ctx.base, local))
        if not os.path.isfile(local):
            raise DataPrepError(f"{ctx.where}: data file {name} does not exist")
        found.append((str(name), local))
    return _Table([PATH_COLUMN, _LOCAL_FILE], found)


def _parse_delimited(table, args, ctx):
    if table.columns != [PATH_COLUMN, _LOCAL_FILE]:
        raise DataPrepError(f"{ctx.where}: parses files, but the step before it is not a data source")
    separator = str(args.get("separator", ","))
    encoding = _ENCODINGS.get(args.get("fileEncoding", 0))
    if encoding is None:
        raise DataPrepError(f"{ctx.where}: unknown fileEncoding {args.get('fileEncoding')!r}")
    if args.get("skipRowsMode", 0) != 0:
        raise DataPrepError(f"{ctx.where}: skipRowsMode {args.get('skipRowsMode')!r} is not supported (only 0)")
    headers_mode = args.get("columnHeadersMode", _HEADERS_NONE)
    quoted_breaks = bool(args.get("handleQuotedLineBreaks", False))
    header = None
    rows = []  # type: list[tuple[str, list[str]]]
    for shown, local in table.rows:
        with open(local, encoding=encoding, newline="") as fh:
            text = fh.read()
        lines = [text] if quoted_breaks else text.splitlines()
        records = []  # type: list[list[str]]
        for line in lines:
            records.extend(csv.reader(io.StringIO(line), delimiter=separator) if line else [[""]])
        if headers_mode != _HEADERS_NONE and records:
            first, records = records[0], records[1:]
            header = header or first
        rows.extend((shown, record) for record in records)
    width = max([len(r) for _, r in rows] + [len(header or [])])
    names = list(header) if header else [f"Column{i}" for i in range(1, width + 1)]
    names += [f"Column{i}" for i in range(len(names) + 1, width + 1)]
    padded = [(shown, *record, *([None] * (width - len(record)))) for shown, record in rows]
    return _Table([PATH_COLUMN, *names], padded)


def _set_column_types(table, args, ctx):
    from datetime import datetime

    rows = [list(r) for r in table.rows]
    for conversion in args.get("columnConversion") or []:
        column = table.index(conversion.get("columnId"), ctx.where)
        kind = conversion.get("typeProperty")
        formats = (conversion.get("typeArguments") or {}).get("dateTimeFormats") or []
        for row in rows:
            row[column] = _convert(row[column], kind, formats, datetime, ctx.where)
    return _Table(table.columns, [tuple(r) for r in rows])


def _convert(value, kind, formats, datetime, where):
    if value is None:
        return None
    text = str(value).strip()
    if kind == _TYPE_STRING:
        return value
    if text == "":
        return None
    if kind == _TYPE_DECIMAL:
        try:
            return float(text)
        except ValueError:
            return None  # Workbench turns a value that does not convert into an error value
    if kind == _TYPE_INTEGER:
        try:
            return int(text)
        except ValueError:
            return None
    if kind == _TYPE_BOOLEAN:
        return {"true": True, "false": False, "1": True, "0": False}.get(text.lower())
    if kind == _TYPE_DATE:
        for fmt in formats:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                continue
        if not formats:
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                return None
        return None
    raise DataPrepError(f"{where}: column type {kind!r} is not supported (0 text, 1 boolean, 2 integer, "
                        "3 decimal, 4 date)")


def _sample(table, args, ctx):
    if not _bool_setting(ctx.settings.get("UseSampling", True)):
        return table
    samples = [s for s in args.get("samples") or [] if isinstance(s, dict)]
    wanted = _named_sample(ctx)
    if wanted is not None:
        chosen = [s for s in samples if s.get("sampleName") == wanted]
        if not chosen:
            names = ", ".join(str(s.get("sampleName")) for s in samples)
            raise DataPrepError(f"{ctx.where}: DataSourceSettings names sample {wanted!r}; the file has {names}")
    else:
        chosen = [s for s in samples if s.get("sampleId") == args.get("activeSample")]
    if not chosen or chosen[0].get("isDisabled"):
        return table
    sample = chosen[0]
    strategy = sample.get("sampleStrategy", _SAMPLE_FULL)
    rows = table.rows
    # the same sample on every run: seeded by the sample's own revision
    rng = random.Random(str(sample.get("sampleRevision") or sample.get("sampleId")))
    if strategy == _SAMPLE_TOP:
        rows = rows[: int((sample.get("topArguments") or {}).get("sampleCount", 10000))]
    elif strategy == _SAMPLE_RANDOM_N:
        count = int((sample.get("randomNArguments") or {}).get("sampleCount", 10000))
        keep = sorted(rng.sample(range(len(rows)), min(count, len(rows))))
        rows = [rows[i] for i in keep]
    elif strategy == _SAMPLE_RANDOM_PERCENT:
        probability = float((sample.get("randomPercentArguments") or {}).get("probability", 0.1))
        rows = [r for r in rows if rng.random() < probability]
    elif strategy != _SAMPLE_FULL:
        raise DataPrepError(f"{ctx.where}: sampleStrategy {strategy!r} is not supported (0 top, 1 random N, "
                            "2 random percent, 3 full file)")
    return _Table(table.columns, rows)


def _named_sample(ctx):
    per_source = ctx.settings.get("DataSourceSettings") or {}
    for name, value in per_source.items():
        if os.path.basename(str(name)) == os.path.basename(ctx.path) and isinstance(value, dict):
            sample = (value.get("Sampling") or {}).get("Sample")
            if sample is not None:
                return str(sample)
    return None


def _bool_setting(value):
    return value if isinstance(value, bool) else str(value).lower() in ("true", "yes", "1")


def _path_column(table, args, ctx):
    operation = args.get("pathColumnOperation", 0)
    if operation == 1:
        return table
    if operation != 0:
        raise DataPrepError(f"{ctx.where}: pathColumnOperation {operation!r} is not supported (0 drop, 1 keep)")
    if PATH_COLUMN not in table.columns:
        return table
    at = table.columns.index(PATH_COLUMN)
    return _Table([c for i, c in enumerate(table.columns) if i != at],
                  [tuple(v for i, v in enumerate(r) if i != at) for r in table.rows])


def _rename(table, args, ctx):
    at = table.index(args.get("columnId"), ctx.where)
    new = str(args.get("newColumnId"))
    if new in table.columns and table.columns[at] != new:
        raise DataPrepError(f"{ctx.where}: a column {new!r} exists already")
    columns = list(table.columns)
    columns[at] = new
    return _Table(columns, table.rows)


def _filter_string(table, args, ctx):
    at = table.index(args.get("columnId"), ctx.where)
    result = args.get("filterResult", _FILTER_KEEP)
    relationship = args.get("clauseRelationship", _CLAUSES_AND)
    if result not in (_FILTER_KEEP, _FILTER_REMOVE):
        raise DataPrepError(f"{ctx.where}: filterResult {result!r} is not supported (0 keep, 1 remove)")
    if relationship not in (_CLAUSES_OR, _CLAUSES_AND):
        raise DataPrepError(f"{ctx.where}: clauseRelationship {relationship!r} is not supported (0 or, 1 and)")
    tests = []
    for clause in args.get("clauses") or []:
        operator = clause.get("operator")
        if operator != _OPERATOR_IS_NULL:
            raise DataPrepError(f"{ctx.where}: string filter operator {operator!r} is not supported "
                                f"(only {_OPERATOR_IS_NULL}, 'is null')")
        tests.append(lambda v: v is None or (isinstance(v, str) and v == ""))
    if not tests:
        return table
    combine = all if relationship == _CLAUSES_AND else any
    rows = [r for r in table.rows if combine(t(r[at]) for t in tests) == (result == _FILTER_KEEP)]
    return _Table(table.columns, rows)


def _to_spark(frame, path):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataPrepError(f"{path}: spark=True needs PySpark (a run with Framework: PySpark)") from None
    session = SparkSession.getActiveSession()
    if session is None:
        session = SparkSession.builder.getOrCreate()
    return session.createDataFrame(frame)


_SOURCES = {"Microsoft.DPrep.DataSourceBlock", "Microsoft.DPrep.ReferenceActivityBlock"}
_BLOCKS = {
    "Microsoft.DPrep.DataSourceBlock": _data_source,
    "Microsoft.DPrep.ReferenceActivityBlock": _reference,
    "Microsoft.DPrep.ParseDelimitedBlock": _parse_delimited,
    "Microsoft.DPrep.SetColumnTypesBlock": _set_column_types,
    "Microsoft.DPrep.SampleBlock": _sample,
    "Microsoft.DPrep.HandlePathColumnBlock": _path_column,
    "Microsoft.DPrep.ColumnRenameBlock": _rename,
    "Microsoft.DPrep.FilterStringColumnBlock": _filter_string,
}
