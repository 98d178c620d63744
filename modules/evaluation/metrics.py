"""Depth / distance error metrics against ground truth, with optional alignment before scoring.

Conventions:

* ``pred`` and ``gt`` are [H, W] maps of the *same quantity* in metres: ``distance`` (Euclidean length along the
  ray, ERP panoramas) or ``depth`` (z in a perspective camera). ``pred_kind="disparity"`` says that ``pred`` is a
  relative disparity (``1 / depth`` up to an unknown scale and shift, what MiDaS / Depth Anything output; for
  ERP maps read ``1 / distance``); it can only be scored after ``alignment="affine_disparity"``.
* A pixel is valid when ``pred`` and ``gt`` are finite, ``gt > 0``, ``pred > 0`` (after alignment), the optional
  ``mask`` is true, the optional ``depth_range`` contains ``gt``, and (ERP maps) its latitude lies in ``lat_band``.
* Metrics (Eigen et al. 2014), means over the valid pixels:
  ``abs_rel = mean(|p - g| / g)``, ``sq_rel = mean((p - g)^2 / g)``, ``mae = mean(|p - g|)``,
  ``rmse = sqrt(mean((p - g)^2))``, ``rmse_log = sqrt(mean((ln p - ln g)^2))``,
  ``delta{k} = mean(max(p / g, g / p) < delta_base^k)`` for k = 1, 2, 3 (``delta_base`` = 1.25).
* Alignment (fitted on the valid pixels, then applied to every pixel):
  ``none`` — pred is used as is; ``median`` — pred * median(gt) / median(pred) (scale only);
  ``affine_disparity`` — least squares ``s * (1 / p) + t ~ 1 / g`` (MiDaS protocol), aligned depth
  ``1 / max(s / p + t, 1 / depth_cap)``; ``depth_cap`` defaults to the largest valid ground truth, so a fit that
  sends a pixel's disparity to zero or below scores it as that farthest depth instead of dropping it.
* ``weighting="solid_angle"`` (ERP maps only) weights every pixel by the solid angle it covers (proportional to
  cos(latitude)), in the alignment fit and in every mean, so that the over-sampled polar rows count only as much
  as the sphere area they cover. Off by default (``"uniform"``, every pixel counts the same), which is what
  published panorama benchmarks report.

Computation is in float64 on the inputs' device (CPU for MPS, which lacks float64). Pure functions.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..errors import UserError
from ..geometry.spherical import erp_lonlat_grid, erp_pixel_solid_angle

__all__ = [
    "METRIC_NAMES",
    "ALIGNMENTS",
    "EvaluationError",
    "valid_mask",
    "erp_latitude_mask",
    "erp_solid_angle_weights",
    "weighted_median",
    "align_median",
    "fit_affine_disparity",
    "align_affine_disparity",
    "compute_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "mae", "rmse", "rmse_log", "delta1", "delta2", "delta3")
ALIGNMENTS: tuple[str, ...] = ("none", "median", "affine_disparity")
WEIGHTINGS: tuple[str, ...] = ("uniform", "solid_angle")
PRED_KINDS: tuple[str, ...] = ("depth", "disparity")


class EvaluationError(UserError, ValueError):
    """Inputs that cannot be scored (shape mismatch, no valid pixel, unknown option)."""


def _work_dtype(x: Tensor) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cpu") if x.device.type == "mps" else x.device
    return device, torch.float64


def valid_mask(
    pred: Tensor,
    gt: Tensor,
    mask: Tensor | None = None,
    depth_range: Sequence[float] | None = None,
) -> Tensor:
    """Pixels where both maps can be compared.

    Args:
        pred: [H, W] prediction (depth/distance, or disparity before alignment; only finiteness is checked here).
        gt: [H, W] ground truth in metres.
        mask: optional [H, W] bool (or 0/1) extra mask, true = keep.
        depth_range: optional (min, max) metres; ground truth outside [min, max] is dropped.
    Returns:
        [H, W] bool: finite(pred) & finite(gt) & gt > 0 & mask & gt in depth_range.
    """
    valid = torch.isfinite(pred) & torch.isfinite(gt) & (gt > 0)
    if mask is not None:
        valid = valid & mask.to(device=valid.device).bool()
    if depth_range is not None:
        lo, hi = float(depth_range[0]), float(depth_range[1])
        if not lo < hi:
            raise EvaluationError(f"depth_range must be (min, max) with min < max, got {tuple(depth_range)}")
        valid = valid & (gt >= lo) & (gt <= hi)
    return valid


def erp_latitude_mask(
    height: int, width: int, lat_band_deg: Sequence[float], device: torch.device | str | None = None
) -> Tensor:
    """Pixels of an ERP map whose centre latitude lies in ``[min_deg, max_deg]`` (inclusive).

    Returns:
        [H, W] bool.
    """
    lo, hi = float(lat_band_deg[0]), float(lat_band_deg[1])
    if not (-90.0 <= lo < hi <= 90.0):
        raise EvaluationError(
            f"lat_band must be (min_deg, max_deg) with -90 <= min < max <= 90, got {tuple(lat_band_deg)}"
        )
    _, lat = erp_lonlat_grid(height, width, device=device, dtype=torch.float64)
    lat_deg = torch.rad2deg(lat)
    return (lat_deg >= lo) & (lat_deg <= hi)


def erp_solid_angle_weights(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Solid angle of every ERP pixel (steradians; sums to 4 pi).

    Returns:
        [H, W].
    """
    return erp_pixel_solid_angle(height, width, device=device, dtype=dtype).expand(height, width)


def weighted_median(values: Tensor, weights: Tensor | None = None) -> Tensor:
    """Median of ``values`` [N]; with ``weights`` [N] (>= 0), the smallest value whose cumulative weight reaches
    half the total (the lower weighted median). Without weights this is ``torch.median`` (the lower median).

    Returns:
        a 0-d tensor.
    """
    if values.numel() == 0:
        raise EvaluationError("median of an empty set of pixels")
    if weights is None:
        return values.median()
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0)
    idx = torch.searchsorted(cum, cum[-1] * 0.5)
    return values[order][idx.clamp(max=values.numel() - 1)]


def align_median(pred: Tensor, gt: Tensor, valid: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Scale ``pred`` so that its median over ``valid`` equals the ground truth's.

    Args:
        pred, gt: [H, W] positive depths/distances on the valid pixels.
        valid: [H, W] bool, pixels used for the fit (pred > 0 there).
        weights: optional [H, W] per-pixel weights (weighted medians).
    Returns:
        aligned pred [H, W] and the scale (0-d tensor).
    """
    w = None if weights is None else weights[valid]
    scale = weighted_median(gt[valid], w) / weighted_median(pred[valid], w)
    return pred * scale, scale


def fit_affine_disparity(
    pred_disparity: Tensor, gt_disparity: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Weighted least squares ``s * pred_disparity + t ~ gt_disparity``.

    Args:
        pred_disparity, gt_disparity: [N] samples.
        weights: optional [N] non-negative weights.
    Returns:
        (s, t) as 0-d tensors.
    """
    if pred_disparity.numel() < 2:
        raise EvaluationError(f"affine alignment needs at least 2 valid pixels, got {pred_disparity.numel()}")
    w = torch.ones_like(pred_disparity) if weights is None else weights
    sw = w.sum()
    mp = (w * pred_disparity).sum() / sw
    mg = (w * gt_disparity).sum() / sw
    dp = pred_disparity - mp
    var = (w * dp * dp).sum()
    if not bool(var > 0):
        raise EvaluationError("affine alignment is undefined: the prediction is constant over the valid pixels")
    s = (w * dp * (gt_disparity - mg)).sum() / var
    return s, mg - s * mp


def align_affine_disparity(
    pred_disparity: Tensor,
    gt: Tensor,
    valid: Tensor,
    weights: Tensor | None = None,
    depth_cap: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Align a (relative) disparity map to metric ground truth by scale and shift in disparity space.

    Args:
        pred_disparity: [H, W] disparity (for a depth prediction pass ``1 / pred``).
        gt: [H, W] ground-truth depth/distance in metres.
        valid: [H, W] bool, pixels used for the fit (finite pred, gt > 0).
        weights: optional [H, W] per-pixel weights.
        depth_cap: aligned depths are capped at this value (aligned disparity floored at ``1 / depth_cap``);
            None = the largest valid ground truth.
    Returns:
        aligned depth [H, W], scale s, shift t (``s * pred_disparity + t`` approximates ``1 / gt``).
    """
    w = None if weights is None else weights[valid]
    s, t = fit_affine_disparity(pred_disparity[valid], 1.0 / gt[valid], w)
    cap = float(gt[valid].max()) if depth_cap is None else float(depth_cap)
    if not cap > 0:
        raise EvaluationError(f"depth_cap must be positive, got {depth_cap}")
    disparity = (s * pred_disparity + t).clamp(min=1.0 / cap)
    return 1.0 / disparity, s, t


def _weighted_mean(x: Tensor, w: Tensor | None) -> float:
    if w is None:
        return float(x.mean())
    return float((x * w).sum() / w.sum())


def _check_inputs(pred: Tensor, gt: Tensor, mask: Tensor | None) -> None:
    if pred.dim() != 2 or gt.dim() != 2:
        raise EvaluationError(f"pred and gt must be [H, W] maps, got shapes {tuple(pred.shape)} and {tuple(gt.shape)}")
    if pred.shape != gt.shape:
        raise EvaluationError(
            f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}; resize the prediction first"
        )
    if mask is not None and mask.shape != gt.shape:
        raise EvaluationError(f"mask shape {tuple(mask.shape)} differs from gt shape {tuple(gt.shape)}")


def compute_metrics(
    pred: Tensor,
    gt: Tensor,
    mask: Tensor | None = None,
    alignment: str = "none",
    lat_band: Sequence[float] | None = None,
    weighting: str = "uniform",
    pred_kind: str = "depth",
    depth_range: Sequence[float] | None = None,
    depth_cap: float | None = None,
    delta_base: float = 1.25,
) -> dict[str, float]:
    """Score one prediction against its ground truth.

    Args:
        pred: [H, W] predicted depth/distance (``pred_kind="depth"``) or relative disparity (``"disparity"``).
        gt: [H, W] ground truth in metres; <= 0 or non-finite = invalid.
        mask: optional [H, W] bool, true = evaluate this pixel.
        alignment: ``"none" | "median" | "affine_disparity"`` (see the module docstring).
        lat_band: optional (min_deg, max_deg): ERP maps only, keep rows whose latitude is in the band.
        weighting: ``"uniform"`` or ``"solid_angle"`` (ERP maps only).
        pred_kind: ``"depth"`` (also for distances) or ``"disparity"`` (requires ``affine_disparity``).
        depth_range: optional (min, max) metres of ground truth to evaluate.
        depth_cap: cap for affine-aligned depths (None = largest valid ground truth).
        delta_base: threshold base of the delta accuracies (1.25).
    Returns:
        dict with every name of :data:`METRIC_NAMES` plus ``n_valid`` (pixels scored), ``scale`` and ``shift``
        (the alignment's parameters: scale = 1 and shift = 0 for ``none``; shift = 0 for ``median``).
    Raises:
        EvaluationError: shapes differ, an option is unknown, or no pixel is valid.
    """
    _check_inputs(pred, gt, mask)
    if alignment not in ALIGNMENTS:
        raise EvaluationError(f"unknown alignment '{alignment}'; known: {', '.join(ALIGNMENTS)}")
    if weighting not in WEIGHTINGS:
        raise EvaluationError(f"unknown weighting '{weighting}'; known: {', '.join(WEIGHTINGS)}")
    if pred_kind not in PRED_KINDS:
        raise EvaluationError(f"unknown pred_kind '{pred_kind}'; known: {', '.join(PRED_KINDS)}")
    if pred_kind == "disparity" and alignment != "affine_disparity":
        raise EvaluationError("a disparity prediction has unknown scale and shift: use alignment='affine_disparity'")

    device, dtype = _work_dtype(gt)
    p = pred.detach().to(device=device, dtype=dtype)
    g = gt.detach().to(device=device, dtype=dtype)
    H, W = g.shape
    valid = valid_mask(p, g, None if mask is None else mask.to(device), depth_range)
    if lat_band is not None:
        valid = valid & erp_latitude_mask(H, W, lat_band, device)
    weights = erp_solid_angle_weights(H, W, device, dtype) if weighting == "solid_angle" else None

    scale = torch.ones((), device=device, dtype=dtype)
    shift = torch.zeros((), device=device, dtype=dtype)
    if alignment == "affine_disparity":
        disparity = p if pred_kind == "disparity" else 1.0 / p
        fit = valid & torch.isfinite(disparity)
        if pred_kind == "depth":
            fit = fit & (p > 0)
        if not bool(fit.any()):
            raise EvaluationError("no valid pixel to fit the alignment (check masks, lat_band and depth_range)")
        p, scale, shift = align_affine_disparity(disparity, g, fit, weights, depth_cap)
    elif alignment == "median":
        fit = valid & (p > 0)
        if not bool(fit.any()):
            raise EvaluationError("no valid pixel to fit the alignment (check masks, lat_band and depth_range)")
        p, scale = align_median(p, g, fit, weights)

    valid = valid & torch.isfinite(p) & (p > 0)
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise EvaluationError("no valid pixel: every pixel is masked, non-finite or non-positive")
    pv, gv = p[valid], g[valid]
    wv = None if weights is None else weights[valid]
    diff = pv - gv
    ratio = torch.maximum(pv / gv, gv / pv)
    out = {
        "abs_rel": _weighted_mean(diff.abs() / gv, wv),
        "sq_rel": _weighted_mean(diff * diff / gv, wv),
        "mae": _weighted_mean(diff.abs(), wv),
        "rmse": math.sqrt(_weighted_mean(diff * diff, wv)),
        "rmse_log": math.sqrt(_weighted_mean((torch.log(pv) - torch.log(gv)) ** 2, wv)),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = _weighted_mean((ratio < delta_base**k).to(dtype), wv)
    out["n_valid"] = n_valid
    out["scale"] = float(scale)
    out["shift"] = float(shift)
    return out
