"""A run's active time: the sum of the segments it trained in, not the span from its first start.

A fit resumed into the same MLflow run (``--ckpt_path``) keeps the run's first ``start_time``, and MLflow
records no pause, so ``end_time - start_time`` counts the hours between the two fits as training. Two tags
carry the segments instead: ``lightning_wd.active_seconds`` (the sum of the segments before the last) and
``lightning_wd.segment_start`` (epoch milliseconds at which the last began: the run's own start for its
first fit). :class:`~lightning_wd.tracking.record.MLflowRecord` writes them when a fit starts
(:func:`open_segment`); the last segment ends with the run (its ``end_time``), so a run that was never
resumed lasts what MLflow's own duration says. A segment whose process was killed (``SIGKILL``: the run
stays ``RUNNING``, with no end time) is closed by the next resume at the last metric it logged.
:func:`active_seconds` reads the tags back (``lightning-wd compare``'s duration).

Example:
    >>> from types import SimpleNamespace
    >>> def run(tags):
    ...     info = SimpleNamespace(start_time=1_000, end_time=7_201_000, status="FINISHED")
    ...     return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags))
    ...
    >>> active_seconds(run({ACTIVE_TAG: "60", SEGMENT_TAG: "7171000"}))  # 60 s, then 30 s after resuming
    90.0
    >>> active_seconds(run({}))  # a run no segment was recorded for: its whole span
    7200.0
"""

from __future__ import annotations

import time
from typing import Any

from lightning_wd.tracking.params import TAG_PREFIX

__all__ = ["ACTIVE_TAG", "SEGMENT_TAG", "active_seconds", "open_segment"]

ACTIVE_TAG = TAG_PREFIX + "active_seconds"
SEGMENT_TAG = TAG_PREFIX + "segment_start"


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _segment_seconds(run, start: float) -> float:
    """How long the segment that began at ``start`` (epoch ms) lasted: until the run's end when it ended
    after ``start``; until the last metric logged in it when it was killed there (no end time, an end from
    an earlier segment, or ``KILLED``: a run marked dead later by someone else ends when that happens);
    0 when nothing is known."""
    end = run.info.end_time
    if not end or end < start or run.info.status == "KILLED":
        stamps = [m.timestamp for m in getattr(run.data, "_metric_objs", None) or []  # each metric's latest
                  if (getattr(m, "timestamp", None) or 0) >= start]
        end = max(stamps) if stamps else (end if end and end >= start else None)
    return max(0.0, (end - start) / 1000) if end else 0.0


def open_segment(client, run, continued: bool) -> None:
    """Start a segment of the active time of ``run`` (an ``mlflow.entities.Run``) as its fit starts.

    Args:
        client: an ``mlflow.MlflowClient``.
        run: the run, as read before this fit changed it (its status and end time are the last fit's).
        continued: whether an earlier fit logged to this run; then the earlier segments are added up
            (the last one by :func:`_segment_seconds`; a run recorded before these tags existed counts its
            span) and the new segment starts now, else it starts at the run's creation.
    """
    from mlflow.entities import RunTag

    tags, info = run.data.tags, run.info
    if not continued:
        active, start = 0.0, info.start_time or int(time.time() * 1000)
    else:
        if ACTIVE_TAG in tags:
            active = _float(tags[ACTIVE_TAG])
            if tags.get(SEGMENT_TAG) not in (None, ""):
                active += _segment_seconds(run, _float(tags[SEGMENT_TAG]))
        else:
            active = _segment_seconds(run, info.start_time) if info.start_time else 0.0
        start = int(time.time() * 1000)
    client.log_batch(info.run_id, tags=[RunTag(ACTIVE_TAG, f"{active:.3f}"), RunTag(SEGMENT_TAG, str(start))])


def active_seconds(run) -> float | None:
    """Seconds a run (an ``mlflow.entities.Run``) trained: the earlier segments plus the last, which ends
    with the run; ``None`` while it runs. A run without the tags counts ``end_time - start_time``."""
    info, tags = run.info, run.data.tags
    if info.status == "RUNNING" or not info.end_time or not info.start_time:
        return None
    if ACTIVE_TAG not in tags:
        return max(0.0, (info.end_time - info.start_time) / 1000)
    active = _float(tags[ACTIVE_TAG])
    if tags.get(SEGMENT_TAG) not in (None, ""):
        active += _segment_seconds(run, _float(tags[SEGMENT_TAG]))
    return active
