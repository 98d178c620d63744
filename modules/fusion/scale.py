"""Metric scale for an ERP distance map: from the camera's height above the floor, a given factor, or relative.

Predicted distances have an unknown global scale. Three ways to fix it, decided by the arguments of
:func:`metric_scale`:

* ``camera_height`` (metres from the camera to the floor, indoor scenes): the floor plane is fitted by RANSAC
  (pure torch, randomness only from the given ``torch.Generator``) to the points seen at least
  ``min_depression_deg`` below the horizon, among planes whose normal is within ``max_tilt_deg`` of the
  vertical (the panorama is assumed levelled, OpenCV y down), then refined by least squares on its inliers;
  factor = camera_height / (the plane's distance from the camera);
* ``factor``: multiply distances by it (the result is then in the units the caller says);
* neither: ``relative="median"`` makes the median valid distance 1 and says the result is not metric;
  ``relative="keep"`` leaves the distances as they are (e.g. an earlier run's output, already scaled).

The returned ``info`` dict is meant for meta.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UserError
from ..geometry.erp_maps import check_distance_map
from ..geometry.spherical import erp_directions, erp_row_latitudes
from ..geometry.tangent import TangentCameras
from .metric_scale import network_scale

__all__ = ["FloorNotFoundError", "FloorPlane", "ScaleResult", "Scale", "MetricViews", "SCALE_METHODS", "fit_floor_plane",
           "metric_scale"]


class FloorNotFoundError(UserError, ValueError):
    """No floor plane could be found for the camera-height scale."""


@dataclass(frozen=True)
class FloorPlane:
    """A plane ``normal . x = height`` (camera at the origin, OpenCV axes, normal pointing down: +y).

    Attributes:
        normal: [3] unit normal.
        height: distance from the camera to the plane (same units as the input distances).
        inlier_fraction: share of the solid angle seen ``min_depression_deg`` or more below the horizon whose points
            lie within ``support_band`` x the inlier tolerance of the plane (what the acceptance is decided on).
        tilt_deg: angle between the normal and the vertical.
        num_candidates: points seen below ``min_depression_deg``.
        pixel_fraction: share of the candidate pixels within the inlier tolerance (ERP pixels crowd near the nadir,
            so on a scene without a floor the plane tangent below the camera still holds ~24 % of them).
    """

    normal: Tensor
    height: float
    inlier_fraction: float
    tilt_deg: float
    num_candidates: int
    pixel_fraction: float = float("nan")


@dataclass(frozen=True)
class ScaleResult:
    """``factor`` multiplies distances; ``info`` describes how it was found (for meta.json)."""

    factor: float
    info: dict = field(default_factory=dict)


def _plane_through(p: Tensor) -> tuple[Tensor, Tensor]:
    """Planes through point triples [K, 3, 3] -> unit normals [K, 3] (y >= 0) and offsets [K] (n . x = offset)."""
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    n = torch.nn.functional.normalize(n, dim=-1)
    n = torch.where(n[:, 1:2] < 0, -n, n)
    return n, (n * p[:, 0]).sum(-1)


def fit_floor_plane(
    distance: Tensor,
    *,
    min_depression_deg: float = 30.0,
    max_tilt_deg: float = 10.0,
    inlier_tolerance: float = 0.02,
    num_hypotheses: int = 512,
    max_points: int = 20000,
    min_inlier_fraction: float = 0.5,
    support_band: float = 3.0,
    generator: torch.Generator | None = None,
) -> FloorPlane:
    """Fit the floor plane below the camera, and refuse a weak one.

    The plane is chosen by RANSAC on the candidate pixels and refined by least squares on its inliers; it is then
    accepted only if it carries the lower view: the share of the solid angle (pixels weighted by cos(latitude))
    below ``min_depression_deg`` whose points lie within ``support_band`` x ``inlier_tolerance`` of it must reach
    ``min_inlier_fraction``, and its tilt must stay within ``max_tilt_deg``. Measured on synthetic scenes at 512x256
    (rooms, corridors and outdoor streets, seeds 0-5; clean, 5 % per-pixel noise, or a 5-10 % smooth warp): 0.57-1.0
    with a floor; a uniform sphere (no floor) 0.15-0.19 and a smooth blob 0.33-0.35, so 0.5 separates them.

    Args:
        distance: [H, W] ERP distance map (invalid pixels ignored).
        min_depression_deg: use pixels at least this far below the horizon (latitude <= -value).
        max_tilt_deg: accept planes whose normal is within this angle of the vertical.
        inlier_tolerance: inlier band half-width, as a fraction of the median candidate distance.
        num_hypotheses: RANSAC plane hypotheses (point triples).
        max_points: candidates are randomly subsampled to at most this many.
        min_inlier_fraction: fail when the plane's share of the lower solid angle (above) is below this.
        support_band: the acceptance counts points within this many inlier tolerances of the plane.
        generator: torch.Generator for the sampling (default: a new one seeded with 0).
    Raises:
        FloorNotFoundError: too few candidates, or no plane satisfies the constraints.
    """
    valid = check_distance_map(distance)
    H, W = distance.shape
    dirs = erp_directions(H, W, distance.device, distance.dtype)
    lat_limit = -math.radians(min_depression_deg)
    lat = erp_row_latitudes(H, distance.device, distance.dtype)
    cand = valid & (lat <= lat_limit)[:, None]
    pts = dirs[cand] * distance[cand][:, None]
    area = torch.cos(lat)[:, None].expand(H, W)[cand]  # solid angle of each candidate pixel (up to a constant)
    n_cand = int(pts.shape[0])
    if n_cand < 3:
        raise FloorNotFoundError(
            f"only {n_cand} valid pixels lie {min_depression_deg} deg or more below the horizon; cannot fit a floor"
        )
    gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
    if n_cand > max_points:
        keep = torch.randperm(n_cand, generator=gen, device=gen.device)[:max_points].to(pts.device)
        pts, area = pts[keep], area[keep]
    tol = inlier_tolerance * float(pts.norm(dim=1).median())
    idx = torch.randint(pts.shape[0], (num_hypotheses, 3), generator=gen, device=gen.device).to(pts.device)
    normals, offsets = _plane_through(pts[idx])
    ok = torch.isfinite(normals).all(-1) & (normals[:, 1] >= math.cos(math.radians(max_tilt_deg))) & (offsets > 0)
    if not bool(ok.any()):
        raise FloorNotFoundError(f"no near-horizontal plane (tilt <= {max_tilt_deg} deg) below the camera was found")
    normals, offsets = normals[ok], offsets[ok]
    counts = ((pts @ normals.T - offsets).abs() <= tol).sum(0)
    best = int(counts.argmax())
    normal, offset = normals[best], offsets[best]
    for _ in range(2):  # least-squares refinement on the inliers
        inl = pts[((pts @ normal) - offset).abs() <= tol]
        if inl.shape[0] < 3:
            break
        centre = inl.mean(0)
        normal = torch.linalg.svd(inl - centre, full_matrices=False).Vh[-1]
        normal = -normal if normal[1] < 0 else normal
        offset = (normal * centre).sum()
    residual = ((pts @ normal) - offset).abs()
    pixel_fraction = float((residual <= tol).float().mean())
    fraction = float((area * (residual <= support_band * tol)).sum() / area.sum())
    tilt = math.degrees(math.acos(min(1.0, float(normal[1]))))
    if fraction < min_inlier_fraction or tilt > max_tilt_deg or not float(offset) > 0:
        raise FloorNotFoundError(
            f"scale.camera_height: no reliable floor: the best plane below the camera carries {fraction:.0%} of the "
            f"view {min_depression_deg:g} deg or more below the horizon (solid angle within {support_band:g} x "
            f"{inlier_tolerance:.0%} of the distance; scale.floor.min_inlier_fraction={min_inlier_fraction:g}), tilt "
            f"{tilt:.1f} deg (scale.floor.max_tilt_deg={max_tilt_deg:g}). Is a floor in view below the camera? "
            "Without one, give scale.factor or leave the scale relative"
        )
    return FloorPlane(normal, float(offset), fraction, tilt, n_cand, pixel_fraction)


_KEEP_INFO = {"units": "unchanged", "method": "keep", "factor": 1.0,
              "note": "distances kept as given (no camera_height or factor)"}


def metric_scale(
    distance: Tensor,
    *,
    camera_height: float | None = None,
    factor: float | None = None,
    floor: dict | None = None,
    relative: str = "median",
    generator: torch.Generator | None = None,
) -> ScaleResult:
    """Find the factor that turns ``distance`` into metres (or into relative units with median 1).

    Args:
        distance: [H, W] ERP distance map.
        camera_height: metres from the camera down to the floor (indoor scenes).
        factor: a known factor (the caller's units).
        floor: keyword options for :func:`fit_floor_plane` (tolerances etc.).
        relative: without camera_height and factor: "median" (median distance 1) or "keep" (factor 1).
        generator: torch.Generator for the floor RANSAC.
    Returns:
        :class:`ScaleResult`; multiply distances by ``factor``.
    Raises:
        ValueError: both or invalid values given; FloorNotFoundError: no floor for ``camera_height``.
    """
    valid = check_distance_map(distance)
    if camera_height is not None and factor is not None:
        raise ValueError("give scale.camera_height or scale.factor, not both")
    if camera_height is not None:
        if not (math.isfinite(camera_height) and camera_height > 0):
            raise ValueError(f"scale.camera_height must be a positive number of metres, got {camera_height}")
        plane = fit_floor_plane(distance, generator=generator, **(floor or {}))
        f = camera_height / plane.height
        return ScaleResult(f, {
            "units": "metres",
            "method": "camera_height",
            "factor": f,
            "camera_height_m": camera_height,
            "floor_distance_before_scaling": plane.height,
            "floor_inlier_fraction": plane.inlier_fraction,
            "floor_pixel_fraction": plane.pixel_fraction,
            "floor_tilt_deg": plane.tilt_deg,
            "floor_thresholds": {"min_inlier_fraction": float((floor or {}).get("min_inlier_fraction", 0.5)),
                                 "max_tilt_deg": float((floor or {}).get("max_tilt_deg", 10.0))},
        })
    if factor is not None:
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"scale.factor must be a positive finite number, got {factor}")
        return ScaleResult(float(factor), {"units": "given factor", "method": "factor", "factor": float(factor)})
    if relative == "keep":
        return ScaleResult(1.0, dict(_KEEP_INFO))
    if relative != "median":
        raise ValueError(f"scale.relative must be 'median' or 'keep', got {relative!r}")
    return _median_result(float(distance[valid].median()))


def _median_result(median: float) -> ScaleResult:
    return ScaleResult(1.0 / median, {
        "units": "relative",
        "method": "median",
        "factor": 1.0 / median,
        "note": "not metric: distances are divided by their median (median = 1); set scale.camera_height or "
        "scale.factor for metric output",
    })


#: scale.method values (see :class:`Scale`)
SCALE_METHODS = ("auto", "network", "camera_height", "factor", "relative")

_RELATIVE_NOTE = ("not metric: the median distance is 1; set scale.camera_height or scale.factor, or use a metric "
                  "predictor")


@dataclass
class MetricViews:
    """A metric network's depth on its metric views of one panorama (``modules/fusion/metric_scale.py``).

    Attributes:
        depth: [V, s, s] metric depth (metres).
        cameras: the V views.
        max_depth: the network's largest output (None: unbounded).
        source: what meta.json says about the network (name, variant, weights).
    """

    depth: Tensor
    cameras: TangentCameras
    max_depth: float | None
    source: dict


@dataclass(frozen=True)
class Scale:
    """The one scale path (config group ``scale``, ``_target_: modules.fusion.scale.Scale``): the tangent and
    equirect pipelines, single_view and render_dense all scale through it.

    First ``relative``: "median" divides by the median valid distance (median 1), "keep" leaves the input as it is
    (an earlier run, already scaled). Then ``method``: ``network`` (the metric network's views, passed to the call;
    :func:`~modules.fusion.metric_scale.network_scale` with the ``network`` options), ``camera_height`` (metres; the
    floor is fitted below the camera with the ``floor`` options and a generator seeded by ``seed``), ``factor``
    (multiplies the map), ``relative`` (nothing more), and ``auto`` (the default): network if views are given (a
    metric predictor whose weights are present), else camera height if given, else factor if given, else relative.
    """

    method: str = "auto"
    camera_height: float | None = None
    factor: float | None = None
    relative: str = "median"
    floor: dict = field(default_factory=dict)
    seed: int = 0
    network: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in SCALE_METHODS:
            raise UserError(f"scale.method must be one of {list(SCALE_METHODS)}, got {self.method!r}")
        if self.relative not in ("median", "keep"):
            raise ValueError(f"scale.relative must be 'median' or 'keep', got {self.relative!r}")
        if self.camera_height is not None and self.factor is not None:
            raise UserError("give scale.camera_height or scale.factor, not both")

    @property
    def may_use_network(self) -> bool:
        """Whether the metric network's views are wanted (method network or auto)."""
        return self.method in ("network", "auto")

    def __call__(self, distance: Tensor, generator: torch.Generator | None = None,
                 metric: MetricViews | None = None, metric_note: str | None = None) -> tuple[Tensor, ScaleResult]:
        """[H, W] distance (NaN / inf / <= 0 invalid) -> the scaled map and the total factor with its description
        (``info``: ``units``, ``method``, ``method_requested``, ...).

        Args:
            generator: for the floor fit; None: one seeded with ``seed`` on the map's device.
            metric: the metric network's views of the panorama (``modules.pipeline.predict_metric_views``) or None.
            metric_note: why there is no metric network (recorded when ``auto`` falls back).
        Raises:
            UserError: a method whose input is missing (e.g. ``network`` without a metric predictor).
        """
        if not bool((torch.isfinite(distance) & (distance > 0)).any()) and bool(torch.isposinf(distance).any()):
            return distance, ScaleResult(1.0, {"units": "relative", "method": "none", "method_requested": self.method,
                                               "note": "no surface: every pixel is sky"})
        valid = check_distance_map(distance)
        if self.relative == "median":
            median = distance.masked_fill(~valid, float("nan")).nanmedian()  # = distance[valid].median(), no gather
            out, base = distance / median, 1.0 / float(median)
            relative_info = {"units": "relative", "method": "median", "note": _RELATIVE_NOTE}
        else:
            out, base = distance, 1.0
            relative_info = dict(_KEEP_INFO)
        method = self.method
        if method == "auto":
            method = ("network" if metric is not None else "camera_height" if self.camera_height is not None
                      else "factor" if self.factor is not None else "relative")
        if method == "network":
            if metric is None:
                raise UserError(
                    "scale.method=network needs a metric predictor: predictor=depth_pro, predictor=depth_anything_v2 "
                    "with a metric_* variant, or predictor=joint_metric" + (f" ({metric_note})" if metric_note else "")
                )
            f, info = network_scale(out, metric.depth, metric.cameras, metric.max_depth, **dict(self.network or {}))
            info["network"] = metric.source
        elif method == "relative":
            f, info = 1.0, relative_info
        else:
            if method == "camera_height" and self.camera_height is None:
                raise UserError("scale.method=camera_height needs scale.camera_height (metres from camera to floor)")
            if method == "factor" and self.factor is None:
                raise UserError("scale.method=factor needs scale.factor")
            if generator is None:
                generator = torch.Generator(device=distance.device).manual_seed(int(self.seed))
            res = metric_scale(out, camera_height=self.camera_height if method == "camera_height" else None,
                               factor=self.factor if method == "factor" else None, floor=dict(self.floor or {}),
                               relative="keep", generator=generator)
            f, info = res.factor, res.info
        info = {**info, "method_requested": self.method}
        if self.method == "auto" and metric is None and metric_note:
            info["metric_network_unavailable"] = metric_note
        return (out if method == "relative" else out * f), ScaleResult(base * float(f), info)
