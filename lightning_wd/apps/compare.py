"""``lightning-wd compare``: one row per MLflow run, best validation accuracy first.

Each row holds the run's name, decay scheme, strength and schedule (the ``lightning_wd.*`` tags that
:class:`~lightning_wd.tracking.MLflowRecord` sets, else its ``wd.*`` params), the final ``train/acc``,
``val/acc``, ``train/loss``, ``val/loss`` and ``wd/nonzero_fraction``, the duration and the status.
The rows come from :func:`lightning_wd.tracking.queries.compare_runs`; this module parses the arguments,
formats the table and prints it.

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
from lightning_wd.core.messages import one_line
from lightning_wd.tracking.queries import ExperimentNotFound, compare_runs
from lightning_wd.tracking.uris import DEFAULT_TRACKING_URI, TrackingUnavailable

__all__ = ["COLUMNS", "FORMATS", "format_table", "main"]

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
    if key == "run_id":
        return str(value)[:8]
    if key == "duration_s":
        return _duration(float(value))
    if key == "strength" and isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[Mapping], fmt: str = "table") -> str:
    """Render rows of :func:`compare_runs` as an aligned text table, a Markdown table, or CSV.

    Missing values show as ``-`` (empty in CSV). ``table`` and ``markdown`` show the run id's first 8
    characters (enough for ``mlflow runs describe`` and the UI's search), CSV the whole id.

    Args:
        rows: dicts keyed as in :data:`COLUMNS` (absent keys count as missing).
        fmt: ``table``, ``markdown`` or ``csv``.

    Raises:
        ValueError: unknown ``fmt``.

    Example:
        >>> print(format_table([{"run": "a", "val_acc": 0.9, "duration_s": 75.0}], "markdown"))
        | run | run_id | scheme | strength | schedule | train_acc | val_acc | train_loss | val_loss \
| nonzero | duration | status |
        |---|---|---|---|---|---|---|---|---|---|---|---|
        | a | - | - | - | - | - | 0.9000 | - | - | - | 1m15s | - |
    """
    if fmt not in FORMATS:
        raise ValueError(f"`fmt` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    columns = COLUMNS
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
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(headers)]
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
    parser.add_argument("--experiment", default=None, help="experiment name or id (default: every experiment)")
    parser.add_argument("--parent", default=None, metavar="RUN_ID",
                        help="only the child runs of this run (a study's trials)")
    parser.add_argument("--study", default=None, metavar="NAME", help="only the trials of this Optuna study")
    parser.add_argument("--tracking-uri", default=None,
                        help=f"tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")
    parser.add_argument("--format", default="table", choices=FORMATS, help="output format (default: table)")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        print(f"lightning-wd compare: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)

    try:
        rows = compare_runs(args.experiment, args.tracking_uri, parent=args.parent, study=args.study)
    except (TrackingUnavailable, ExperimentNotFound) as error:
        print(f"lightning-wd compare: error: {one_line(error.args[0] if error.args else error, 500)}",
              file=sys.stderr)
        return 2
    except Exception as error:  # MLflow refusing the URI or the store: still one line, no traceback
        if type(error).__module__.split(".")[0] != "mlflow":
            raise
        message = getattr(error, "message", None) or error
        print(f"lightning-wd compare: error: {one_line(message, 500)}", file=sys.stderr)
        return 2
    if not rows:  # the header alone on stdout (a script still parses it), the reason on stderr
        where = f"experiment {args.experiment!r}" if args.experiment else "the tracking store"
        print(f"lightning-wd compare: no runs in {where}" + (" matching the filters" if args.parent or args.study
                                                             else ""), file=sys.stderr)
    try:
        print(format_table(rows, args.format), flush=True)
    except BrokenPipeError:  # `compare | head -1`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0
