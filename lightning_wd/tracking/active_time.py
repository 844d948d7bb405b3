"""A run's active time: the sum of the segments it trained in, not the span from its first start.

A fit resumed into the same MLflow run (``--ckpt_path``) keeps the run's first ``start_time``, and MLflow
records no pause, so ``end_time - start_time`` counts the hours between the two fits as training. Two tags
carry the segments instead: ``lightning_wd.active_seconds`` (the closed segments' sum) and
``lightning_wd.segment_start`` (epoch milliseconds of the segment now open). :class:`MLflowRecord` opens a
segment when fit starts and closes it when fit ends or fails; a segment left open by a killed process
(``SIGKILL``: no hook ran) is closed at the next start, at its last logged metric, else at the run's end
time. :func:`active_seconds` reads the tags back (``lightning-wd compare``'s duration).

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

__all__ = ["ACTIVE_TAG", "SEGMENT_TAG", "active_seconds", "close_segment", "open_segment"]

ACTIVE_TAG = TAG_PREFIX + "active_seconds"
SEGMENT_TAG = TAG_PREFIX + "segment_start"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _open_seconds(run, start: float) -> float:
    """How long the segment that began at ``start`` (epoch ms) and was never closed lasted: until the run's
    last metric logged in it, else its end time, else nothing is known (0)."""
    stamps = [m.timestamp for m in getattr(run.data, "_metric_objs", None) or []  # the latest value of each
              if (getattr(m, "timestamp", None) or 0) >= start]
    end = max(stamps) if stamps else run.info.end_time
    return max(0.0, (end - start) / 1000) if end else 0.0


def open_segment(client, run) -> None:
    """Start counting the active time of ``run`` (an ``mlflow.entities.Run``) now.

    A segment still open from an earlier process that died without closing it is closed first (at its
    last metric, else the run's end time); a run resumed for the first time since this module exists
    counts its earlier span (``end_time - start_time``) as active.
    """
    tags = run.data.tags
    if ACTIVE_TAG in tags:
        active = _float(tags[ACTIVE_TAG])
        start = tags.get(SEGMENT_TAG)
        if start not in (None, ""):
            active += _open_seconds(run, _float(start))
    elif run.info.end_time and run.info.start_time:  # resumed, recorded before segments were
        active = max(0.0, (run.info.end_time - run.info.start_time) / 1000)
    else:
        active = 0.0
    from mlflow.entities import RunTag

    client.log_batch(run.info.run_id, tags=[RunTag(ACTIVE_TAG, f"{active:.3f}"), RunTag(SEGMENT_TAG, str(_now_ms()))])


def close_segment(client, run_id: str) -> float:
    """Add the open segment of ``run_id`` to its active time; return the total seconds.

    Nothing happens (and the tags' total is returned) when no segment is open.
    """
    tags = client.get_run(run_id).data.tags
    active = _float(tags.get(ACTIVE_TAG))
    start = tags.get(SEGMENT_TAG)
    if start in (None, ""):
        return active
    active += max(0.0, (_now_ms() - _float(start)) / 1000)
    client.set_tag(run_id, ACTIVE_TAG, f"{active:.3f}")
    client.delete_tag(run_id, SEGMENT_TAG)
    return active


def active_seconds(run) -> float | None:
    """Seconds a run (an ``mlflow.entities.Run``) trained: its closed segments plus, for an ended run, the one
    left open; ``None`` while it runs. A run without the tags (not recorded by :class:`MLflowRecord`)
    counts ``end_time - start_time``.

    A segment left open (its process was killed; the run was ended by someone else, such as a study
    marking a dead worker's trial ``KILLED``) lasts until the run's last metric logged in it, else its
    end time.
    """
    info, tags = run.info, run.data.tags
    if info.status == "RUNNING" or not info.end_time or not info.start_time:
        return None
    if ACTIVE_TAG not in tags:
        return max(0.0, (info.end_time - info.start_time) / 1000)
    active = _float(tags[ACTIVE_TAG])
    start = tags.get(SEGMENT_TAG)
    if start not in (None, ""):
        active += _open_seconds(run, _float(start))
    return active
