"""Metric scale of a relative ERP distance map from a metric depth network (``scale.method=network``).

Why views and not the faces: the tangent faces are very wide (about 127 degrees at the default icosahedron padding),
far wider than the cameras the metric networks were trained with. A network without camera input (Depth Anything V2
metric: Hypersim / Virtual KITTI 2) learned its metric scale through its training camera's focal length, so its
depth on a 127-degree face is off by roughly the ratio of focal lengths, and its scale is the quantity we need. The
metric network therefore sees its own *metric views*: square gnomonic views rendered straight from the panorama
(sharp, not upsampled face crops), one per face direction, with the field of view that gives the network its
training camera's focal length in network pixels (``metric_view_fov_deg`` in the variant table: 46.8 deg for the
Hypersim models, 29.0 deg for the Virtual KITTI 2 ones). Depth Pro is told the focal length of its views exactly,
so its view FOV (60 deg) is only chosen to look like a usual photo.

The estimate, per panorama (pure tensor functions below):

1. ``metric distance = metric depth / cos(angle to the view's axis)`` at every view pixel;
2. the pipeline's relative distance map (after alignment, blending and refinement) is sampled at the same pixels;
3. per view, the median of ``log(metric / relative)`` over valid pixels (finite, positive, and below
   ``saturation x max_depth`` for networks whose head saturates at ``max_depth``); views with fewer than
   ``min_valid_fraction`` valid pixels are dropped;
4. the factor is ``exp(median over views)``: a robust median of the per-view metric estimates, so a few views the
   network gets wrong (a mirror, a blank wall) do not move it. The spread of the per-view estimates
   (1.4826 x MAD, in log units ~ relative) is recorded in meta.json as an uncertainty hint.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError
from ..geometry.tangent import TangentCameras, erp_to_faces, face_cos_to_axis
from ..robust import MAD_TO_SIGMA

__all__ = ["MetricScaleError", "metric_view_cameras", "network_scale"]



class MetricScaleError(UserError, ValueError):
    """The metric network gave too few usable pixels for a scale."""


def metric_view_cameras(R_world_from_face: Tensor, fov_deg: float, size: int) -> TangentCameras:
    """Square pinhole views looking along the given faces' axes.

    Args:
        R_world_from_face: [V, 3, 3] view orientations (e.g. the pipeline's face cameras').
        fov_deg: full field of view, centre to edge middle and back (degrees, 0 < fov < 180).
        size: pixels per side.
    Returns:
        V cameras on the rotations' device and dtype.
    """
    if not 0.0 < float(fov_deg) < 180.0 or int(size) < 1:
        raise ValueError(f"need 0 < fov_deg < 180 and size >= 1, got {fov_deg}, {size}")
    tan_half = torch.full(
        (R_world_from_face.shape[0],), math.tan(math.radians(float(fov_deg)) / 2.0),
        dtype=R_world_from_face.dtype, device=R_world_from_face.device,
    )
    return TangentCameras(R_world_from_face, tan_half, int(size))


def _masked_median(values: Tensor, valid: Tensor) -> Tensor:
    """[V, N] -> [V] median over valid entries (nan for none)."""
    return torch.where(valid, values, torch.full_like(values, float("nan"))).nanmedian(dim=1).values


def network_scale(
    distance: Tensor,
    metric_depth: Tensor,
    cameras: TangentCameras,
    max_depth: float | None = None,
    saturation: float = 0.95,
    min_valid_fraction: float = 0.25,
) -> tuple[float, dict]:
    """Factor that turns the relative ``distance`` into metres (module header, steps 1-4).

    Args:
        distance: [H, W] relative ERP distance (positive where valid).
        metric_depth: [V, s, s] metric depth (metres, z along each view's axis) of the V views.
        cameras: the V views (size s), on ``distance``'s device or any.
        max_depth: the network's largest output (``None``: unbounded); pixels at or above
            ``saturation x max_depth`` are ignored (a sigmoid head there says "far", not how far).
        saturation: see ``max_depth``, in (0, 1].
        min_valid_fraction: views with fewer valid pixels than this fraction are not used.
    Returns:
        (factor, info for meta.json).
    Raises:
        MetricScaleError: no view has enough valid pixels.
    """
    if distance.ndim != 2 or metric_depth.ndim != 3 or metric_depth.shape[0] != cameras.num_faces:
        raise ValueError(
            f"need distance [H, W] and metric_depth [V, s, s] for {cameras.num_faces} views, got "
            f"{tuple(distance.shape)} and {tuple(metric_depth.shape)}"
        )
    if tuple(metric_depth.shape[-2:]) != (cameras.size, cameras.size):
        raise ValueError(f"metric_depth is {tuple(metric_depth.shape[-2:])} but the views are {cameras.size} px")
    if not 0.0 < saturation <= 1.0 or not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"need 0 < saturation <= 1 and 0 <= min_valid_fraction <= 1, got {saturation}, "
                         f"{min_valid_fraction}")
    dev = distance.device
    cams = cameras.to(dev, torch.float32)
    rel = distance.to(torch.float32)
    rel = torch.where(torch.isfinite(rel) & (rel > 0), rel, torch.zeros_like(rel))
    # nearest keeps depth edges from mixing near and far; the median does the rest
    rel_views = erp_to_faces(rel[None, None], cams, mode="nearest", antialias=False)[0, :, 0]  # [V, s, s]
    depth = metric_depth.to(dev, torch.float32)
    metric = depth / face_cos_to_axis(cams)
    valid = torch.isfinite(metric) & (depth > 0) & (rel_views > 0)
    if max_depth is not None:
        valid = valid & (depth < saturation * float(max_depth))
    V = depth.shape[0]
    log_ratio = (metric.clamp_min(1e-12).log() - rel_views.clamp_min(1e-12).log()).reshape(V, -1)
    valid = valid.reshape(V, -1)
    fraction = valid.float().mean(dim=1)
    per_view = _masked_median(log_ratio, valid)
    used = (fraction >= min_valid_fraction) & torch.isfinite(per_view)
    if not bool(used.any()):
        raise MetricScaleError(
            f"scale.method=network: none of the {V} metric views has {min_valid_fraction:.0%} valid pixels "
            f"(best {float(fraction.max()):.1%}); the metric network saw nothing it could measure"
        )
    chosen = per_view[used]
    log_factor = chosen.median()
    spread = MAD_TO_SIGMA * (chosen - log_factor).abs().median()
    factor = float(log_factor.exp())
    info = {
        "units": "metres",
        "method": "network",
        "factor": factor,
        "views": V,
        "views_used": int(used.sum()),
        "per_view_factor": [None if not bool(u) else float(f) for u, f in zip(used, per_view.exp())],
        "per_view_spread_log": float(spread),
        "note": "robust median over metric views of median(metric distance / relative distance)",
    }
    return factor, info
