"""Evaluation reports: a per-image CSV and a summary JSON, both written atomically.

* Per-image CSV: one row per image, columns ``image`` then the metrics of :data:`METRIC_NAMES`, then any other
  keys the rows carry (``n_valid``, ``scale``, ``shift``, ``error``, ...) in first-seen order. Missing values are
  empty cells; floats are written with ``repr`` precision.
* Summary JSON: ``{"num_images", "num_scored", "num_failed", "metrics": {name: mean}, "metrics_median":
  {name: median}, ...extra}``; means and medians are over the images that were scored (the usual protocol:
  metrics per image, then averaged). Non-finite numbers are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from typing import Any, Mapping, Sequence

from ..export.atomic import atomic_write_text, write_json
from .metrics import METRIC_NAMES

__all__ = ["summarize_metrics", "write_per_image_csv", "write_summary_json"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarize_metrics(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str] = METRIC_NAMES) -> dict[str, Any]:
    """Aggregate per-image metric rows.

    Args:
        rows: one mapping per image; a row whose metrics are missing or non-finite (a failed image) is counted
            in ``num_failed`` and left out of the statistics.
        metric_names: the metrics to aggregate.
    Returns:
        ``{"num_images", "num_scored", "num_failed", "metrics": {name: mean or None},
        "metrics_median": {name: median or None}}``.
    """
    scored = [r for r in rows if all(_is_number(r.get(m)) for m in metric_names)]
    means, medians = {}, {}
    for name in metric_names:
        values = [float(r[name]) for r in scored]
        means[name] = statistics.fmean(values) if values else None
        medians[name] = statistics.median(values) if values else None
    return {
        "num_images": len(rows),
        "num_scored": len(scored),
        "num_failed": len(rows) - len(scored),
        "metrics": means,
        "metrics_median": medians,
    }


def write_per_image_csv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str] = METRIC_NAMES
) -> None:
    """Write one CSV row per image (see the module docstring for the columns)."""
    columns = ["image", *metric_names]
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def write_summary_json(path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` (e.g. :func:`summarize_metrics` plus the evaluation settings) as indented JSON."""
    write_json(path, summary)
