"""The evaluation loop: predict each image of a dataset, read its ground truth, score it.

The prediction is resized to the ground truth's size before scoring (bilinear; ERP maps wrap around in
longitude, so the seam column is interpolated between the first and last columns). ``predict`` is any callable
``EvalPair -> [H, W] tensor`` (the mode builds it from the pipeline); its output must be the same quantity as the
ground truth (distance for panoramas) unless ``pred_kind="disparity"`` is passed through to the metrics.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import UserError
from ..geometry.erp_maps import resize_map
from .dataset import EvalPair
from .metrics import METRIC_NAMES, EvaluationError, compute_metrics
from .readers import GroundTruth, GroundTruthError

__all__ = ["evaluate_pairs", "sky_scores"]


def sky_scores(pred_sky: Tensor, gt_sky: Tensor, gt_surface: Tensor) -> dict[str, float]:
    """Sky precision / recall of a predicted sky mask (nearest-resized to the truth's size) and the share of true
    surface pixels flagged as sky. pred_sky: [h, w] bool; gt_sky, gt_surface: [H, W] bool."""
    if tuple(pred_sky.shape) != tuple(gt_sky.shape):
        pred_sky = F.interpolate(pred_sky[None, None].float(), size=tuple(gt_sky.shape), mode="nearest")[0, 0] > 0.5
    tp = float((pred_sky & gt_sky).sum())
    flagged = float(pred_sky[gt_sky | gt_surface].sum())
    return {"sky_precision": tp / flagged if flagged else float("nan"),
            "sky_recall": tp / max(1.0, float(gt_sky.sum())),
            "surface_as_sky": float((pred_sky & gt_surface).sum()) / max(1.0, float(gt_surface.sum()))}


def evaluate_pairs(
    pairs: Iterable[EvalPair],
    predict: Callable[[EvalPair], Tensor],
    read_gt: Callable[[str | os.PathLike], GroundTruth],
    erp: bool = True,
    record_failures: bool = True,
    progress: bool = True,
    **metric_kwargs: Any,
) -> list[dict[str, Any]]:
    """Score every pair.

    Args:
        pairs: the dataset (:func:`modules.evaluation.dataset.list_eval_pairs`).
        predict: ``pair -> [h, w]`` prediction (any resolution; resized to the ground truth's).
        read_gt: a reader from :mod:`modules.evaluation.readers`.
        erp: the maps are equirectangular (longitude wrap when resizing).
        record_failures: an image that cannot be scored (no valid pixel, unreadable ground truth, any
            :class:`~modules.errors.UserError` reading or predicting it: a bad image, one too large) gets a row with
            its ``error`` and NaN metrics instead of stopping the run.
        progress: show a tqdm progress bar.
        **metric_kwargs: passed to :func:`modules.evaluation.metrics.compute_metrics` (alignment, lat_band,
            weighting, pred_kind, depth_range, depth_cap, delta_base).
    Returns:
        one row per pair: ``{"image": name, <metrics>, "n_valid", "scale", "shift"}`` (+ ``"error"`` on failure).
    """
    rows = []
    pairs = list(pairs)
    for pair in tqdm(pairs, desc="eval", unit="image", disable=not progress):
        try:
            gt = read_gt(pair.gt)
            raw = predict(pair).to(gt.values.device)
            pred_sky = torch.isposinf(raw)  # no surface (sky): never scored as a distance
            pred = resize_map(torch.where(pred_sky, torch.full_like(raw, float("nan")), raw), gt.values.shape, erp=erp)
            row = {"image": pair.name, **compute_metrics(pred, gt.values, mask=gt.valid, **metric_kwargs)}
            if gt.sky is not None:
                row.update(sky_scores(pred_sky, gt.sky, gt.valid))
        except (EvaluationError, GroundTruthError, UserError) as exc:
            if not record_failures:
                raise
            # a ground-truth or scoring problem is named by the ground truth file; others (InputError, the size
            # guard, the predictor's) name their file themselves
            what = f"{pair.gt}: {exc}" if isinstance(exc, (EvaluationError, GroundTruthError)) else str(exc)
            row = {"image": pair.name, **{m: float("nan") for m in METRIC_NAMES}, "error": what}
        rows.append(row)
    return rows
