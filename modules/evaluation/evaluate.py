"""The evaluation loop: predict each image of a dataset, read its ground truth, score it.

The prediction is resized to the ground truth's size before scoring (bilinear; ERP maps wrap around in
longitude, so the seam column is interpolated between the first and last columns). ``predict`` is any callable
``EvalPair -> [H, W] tensor`` (the mode builds it from the pipeline); its output must be the same quantity as the
ground truth (distance for panoramas) unless ``pred_kind="disparity"`` is passed through to the metrics.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .dataset import EvalPair
from .metrics import METRIC_NAMES, EvaluationError, compute_metrics
from .readers import GroundTruth, GroundTruthError

__all__ = ["resize_map", "evaluate_pairs", "sky_scores"]


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


def resize_map(x: Tensor, size: Sequence[int], erp: bool = True) -> Tensor:
    """Bilinear resize of a map with pixel centres at ``(u + 0.5) / W`` (``align_corners=False`` semantics).

    Args:
        x: [H, W].
        size: (H2, W2).
        erp: wrap around in longitude (columns) instead of clamping at the left/right borders.
    Returns:
        [H2, W2], same dtype/device.
    """
    H2, W2 = int(size[0]), int(size[1])
    if tuple(x.shape) == (H2, W2):
        return x
    H, W = x.shape
    src = x[None, None].float() if not x.is_floating_point() else x[None, None]
    if not erp:
        return F.interpolate(src, size=(H2, W2), mode="bilinear", align_corners=False)[0, 0]
    padded = torch.cat((src[..., -1:], src, src[..., :1]), dim=-1)  # [1, 1, H, W + 2]
    u = (torch.arange(W2, device=x.device, dtype=src.dtype) + 0.5) * (W / W2) - 0.5 + 1.0  # padded column
    v = (torch.arange(H2, device=x.device, dtype=src.dtype) + 0.5) * (H / H2) - 0.5
    gx = (u + 0.5) / (W + 2) * 2.0 - 1.0
    gy = (v + 0.5) / H * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # [1, H2, W2, 2]
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]


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
        record_failures: an image that cannot be scored (no valid pixel, unreadable ground truth) gets a row with
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
        except (EvaluationError, GroundTruthError) as exc:
            if not record_failures:
                raise
            row = {"image": pair.name, **{m: float("nan") for m in METRIC_NAMES}, "error": f"{pair.gt}: {exc}"}
        rows.append(row)
    return rows
