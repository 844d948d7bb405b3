"""``lightning-wd compare``: one row per MLflow run, best validation accuracy first.

Each row holds the run's name, decay scheme, strength and schedule (the ``lightning_wd.*`` tags that
:class:`~lightning_wd.tracking.MLflowRecord` sets, else its ``wd.*`` params), the final ``train/acc``,
``val/acc``, ``train/loss``, ``val/loss`` and ``wd/nonzero_fraction``, the duration and the status.

Example:
    >>> rows = [{"run": "a", "val_acc": 0.91, "strength": 0.05, "status": "FINISHED"}]
    >>> print(format_table(rows, "csv").splitlines()[1])
    a,,,0.05,,,0.91,,,,,FINISHED
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_wd.apps.errors import OneLineParser, UsageError
from lightning_wd.core.messages import one_line as _one_line
from lightning_wd.tracking.uris import (
    DEFAULT_EXPERIMENT,
    TrackingUnavailable,
    absolute_sqlite_uri,
    check_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
)

__all__ = ["COLUMNS", "ExperimentNotFound", "compare_runs", "format_table", "main"]

METRICS = {
    "train_acc": "train/acc",
    "val_acc": "val/acc",
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "nonzero_fraction": "wd/nonzero_fraction",
}
# (key, header) in display order; csv also has run_id and duration in seconds
COLUMNS = [
    ("run", "run"),
    ("run_id", "run_id"),
    ("scheme", "scheme"),
    ("strength", "strength"),
    ("schedule", "schedule"),
    ("train_acc", "train_acc"),
    ("val_acc", "val_acc"),
    ("train_loss", "train_loss"),
    ("val_loss", "val_loss"),
    ("nonzero_fraction", "nonzero"),
    ("duration_s", "duration"),
    ("status", "status"),
]
MISSING = "-"
FORMATS = ("table", "markdown", "csv")


class ExperimentNotFound(LookupError):
    """No experiment of that name (or id) in the tracking store."""


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _number(value: Any) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _row(run) -> dict:
    tags, params, metrics, info = run.data.tags, run.data.params, run.data.metrics, run.info
    duration = None
    if info.end_time and info.start_time and info.status != "RUNNING":
        duration = max(0.0, (info.end_time - info.start_time) / 1000)
    row = {
        "run": _first(info.run_name, tags.get("mlflow.runName"), info.run_id[:8]),
        "run_id": info.run_id,
        "scheme": _first(tags.get("lightning_wd.scheme"), params.get("wd.scheme")),
        "strength": _number(_first(tags.get("lightning_wd.strength"), params.get("wd.weight_decay"),
                                   params.get("wd.strength"))),
        "schedule": _first(tags.get("lightning_wd.schedule"), params.get("wd.schedule")),
        "duration_s": duration,
        "status": info.status,
    }
    row.update({key: metrics.get(name) for key, name in METRICS.items()})
    return row


def _sort_key(row: Mapping) -> tuple:
    acc = row.get("val_acc")
    known = isinstance(acc, (int, float)) and math.isfinite(acc)
    return (0 if known else 1, -acc if known else 0.0)


def _resolve_experiment(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            found = client.get_experiment(experiment)
        except MlflowException:
            found = None
    if found is None or found.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ExperimentNotFound(
            f"no experiment {experiment!r} in the tracking store; experiments: {', '.join(names) or 'none'}"
        )
    return found


def compare_runs(experiment: str | None = None, tracking_uri: str | None = None) -> list[dict]:
    """One row per run of ``experiment``, sorted by final validation accuracy (best first).

    Args:
        experiment: experiment name (or id); default ``lightning_wd``.
        tracking_uri: default ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``.

    Returns:
        Dicts with keys ``run, run_id, scheme, strength, schedule, train_acc, val_acc, train_loss,
        val_loss, nonzero_fraction, duration_s, status``; ``None`` where a run lacks the value.
        Runs without ``val/acc`` come last.

    Raises:
        TrackingUnavailable: the server cannot be reached, or there is no store at a SQLite path.
        ExperimentNotFound: the experiment does not exist.

    Example:
        .. code-block:: python

            print(format_table(compare_runs("mnist1d"), "markdown"))
    """
    uri = absolute_sqlite_uri(resolve_tracking_uri(tracking_uri))
    check_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # reading must not create an empty store
        raise TrackingUnavailable(f"no MLflow store at {db} (log a run first, or pass --tracking-uri)")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = _resolve_experiment(client, experiment or DEFAULT_EXPERIMENT)
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted((_row(run) for run in runs), key=_sort_key)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _cell(key: str, value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "" if fmt == "csv" else MISSING
    if fmt == "csv":
        return f"{value:g}" if isinstance(value, float) and key != "duration_s" else str(value)
    if key == "duration_s":
        return _duration(float(value))
    if key == "strength" and isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[Mapping], fmt: str = "table") -> str:
    """Render rows of :func:`compare_runs` as an aligned text table, a Markdown table, or CSV.

    Missing values show as ``-`` (empty in CSV). ``table`` and ``markdown`` leave out the run id.

    Args:
        rows: dicts keyed as in :data:`COLUMNS` (absent keys count as missing).
        fmt: ``table``, ``markdown`` or ``csv``.

    Raises:
        ValueError: unknown ``fmt``.

    Example:
        >>> print(format_table([{"run": "a", "val_acc": 0.9, "duration_s": 75.0}], "markdown"))
        | run | scheme | strength | schedule | train_acc | val_acc | train_loss | val_loss | nonzero \
| duration | status |
        |---|---|---|---|---|---|---|---|---|---|---|
        | a | - | - | - | - | 0.9000 | - | - | - | 1m15s | - |
    """
    if fmt not in FORMATS:
        raise ValueError(f"`fmt` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    columns = COLUMNS if fmt == "csv" else [c for c in COLUMNS if c[0] != "run_id"]
    headers = [header for _, header in columns]
    cells = [[_cell(key, row.get(key), fmt) for key, _ in columns] for row in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([key for key, _ in columns])
        writer.writerows(cells)
        return buffer.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    numeric = {i for i, (key, _) in enumerate(columns) if key not in ("run", "scheme", "schedule", "status")}

    def render(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([render(headers), *(render(line) for line in cells)])


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-wd compare [--experiment NAME] [--tracking-uri URI] [--format table|markdown|csv]``.

    Prints the table on stdout and returns 0; on bad arguments, an unknown experiment or an unreachable
    tracking store prints one line on stderr and returns 2.

    Example:
        >>> main(["--format", "xml"])
        2
    """
    parser = OneLineParser(prog="lightning-wd compare",
                     description="Compare MLflow runs: scheme, strength, accuracy, non-zero fraction.")
    parser.add_argument("--experiment", default=None, help="experiment name or id (default: lightning_wd)")
    parser.add_argument("--tracking-uri", default=None,
                        help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--format", default="table", choices=FORMATS, help="output format (default: table)")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        print(f"lightning-wd compare: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)

    try:
        rows = compare_runs(args.experiment, args.tracking_uri)
    except (TrackingUnavailable, ExperimentNotFound) as error:
        print(f"lightning-wd compare: error: {_one_line(error.args[0] if error.args else error, 500)}",
              file=sys.stderr)
        return 2
    except Exception as error:  # MLflow refusing the URI or the store: still one line, no traceback
        if type(error).__module__.split(".")[0] != "mlflow":
            raise
        message = getattr(error, "message", None) or error
        print(f"lightning-wd compare: error: {_one_line(message, 500)}", file=sys.stderr)
        return 2
    print(format_table(rows, args.format))
    return 0
