"""Panorama tensor -> globally consistent ERP distance + confidence, with per-stage timings.

    rgb [3, H, W] -> tangent faces (one batched grid_sample) -> predictor on all faces (batched)
      -> global alignment (closed-form, robust) -> blending into the ERP grid
      -> gradient-domain refinement (optional, solved at refine_height, correction upsampled)
      -> scale (median 1, or metric: from a metric network's views, the camera height or a factor)

Stages are built from config (``hydra.utils.instantiate``) and passed in; this module only runs them.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from .errors import UserError
from .export.scale import metric_scale
from .fusion.alignment import Alignment
from .fusion.metric_scale import metric_view_cameras, network_scale
from .fusion.blending import Blender, fill_holes
from .fusion.faces import AlignedFaces, FacePredictions
from .fusion.refinement import NoRefinement
from .fusion.sky import SkyDetector, sanitize_predictions
from .geo_predictors.base import DepthPredictor, resolve_device
from .geometry.projections import IcosahedronProjection, TangentProjection
from .geometry.tangent import TangentCameras, erp_to_faces

log = logging.getLogger(__name__)

__all__ = [
    "PanoramaPipeline", "EquirectPipeline", "MetricViews", "PipelineResult", "StageTimer", "SCALE_METHODS",
    "apply_scale", "invert_disparity", "predict_metric_views", "PROGRESS",
]

#: scale.method values (see :func:`apply_scale`)
SCALE_METHODS = ("auto", "network", "camera_height", "factor", "relative")

#: optional ``callable(stage: str, fraction: float)`` told as each stage of a pipeline run ends (fraction of the
#: run's stages done); set by :func:`modules.api.run`, None for the command line
PROGRESS: ContextVar = ContextVar("pipeline_progress", default=None)


class StageTimer:
    """Wall-clock seconds per named stage (synchronising the GPU so that times are real).

    ``stages``: the run's stage names in order; the end of each is reported to :data:`PROGRESS` when one is set.
    """

    def __init__(self, stages: tuple[str, ...] = ()) -> None:
        self.seconds: dict[str, float] = {}
        self.stages = tuple(stages)
        self.progress = PROGRESS.get()

    @contextmanager
    def __call__(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        def sync() -> None:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)

        sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if self.progress is not None and name in self.stages:
                self.progress(name, (self.stages.index(name) + 1) / len(self.stages))


@dataclass
class PipelineResult:
    """Output of one panorama.

    Attributes:
        distance: [H, W] float32 ERP distance (relative with median 1, or metric when a scale was given).
        confidence: [H, W] float32 in [0, 1].
        faces: the aligned faces (for diagnostics and exports); None for the one-pass equirect baseline.
        timings: seconds per stage; ``network`` holds the predictor's time, the rest are the non-network stages.
        info: what each stage reports (alignment solution, scale ...).
    """

    distance: Tensor
    confidence: Tensor
    faces: AlignedFaces | None
    timings: dict[str, float]
    info: dict = field(default_factory=dict)


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


def _scale_method(scale: dict) -> str:
    method = scale.get("method") or "auto"
    if method not in SCALE_METHODS:
        raise UserError(f"scale.method must be one of {list(SCALE_METHODS)}, got {method!r}")
    return method


def predict_metric_views(predictor: DepthPredictor, rgb: Tensor, scale: dict | None, preprocess=None) -> MetricViews | None:
    """Run the predictor's metric source (if ``scale.method`` may use it) on its metric views of the panorama.

    The views look along the 20 directions of the level-0 icosahedron faces (whatever the projection), with the
    network's :class:`~modules.geo_predictors.base.MetricView` field of view and size.

    Args:
        predictor: the pipeline's predictor (its ``metric_source()`` gives the metric network, if any).
        rgb: [3, H, W] panorama in [0, 1] on the pipeline's device.
        scale: the scale options (only ``method`` is read here).
        preprocess: the face preprocessing, applied to the views too.
    Returns:
        None when the method is not ``network``/``auto`` or there is no metric source.
    """
    method = _scale_method(dict(scale or {}))
    source = predictor.metric_source() if method in ("network", "auto") else None
    if source is None:
        return None
    view = source.metric_view()
    axes = IcosahedronProjection(level=0, face_size=view.size, padding_factor=1.0).cameras(rgb.device, torch.float32)
    cams = metric_view_cameras(axes.R_world_from_face, view.fov_deg, view.size)
    images = erp_to_faces(rgb.to(torch.float32)[None], cams)[0].clamp(0, 1)
    if preprocess is not None:
        images = preprocess(images)
    depth = source.predict_metric_depth(images, cams)
    desc = source.describe()
    summary = {k: desc.get(k) for k in ("name", "variant", "hf_id", "weights", "licence", "random_weights") if k in desc}
    summary["view_fov_deg"], summary["view_size"] = view.fov_deg, view.size
    return MetricViews(depth.to(rgb.device, torch.float32), cams, view.max_depth, summary)


def apply_scale(
    distance: Tensor, scale: dict | None = None, metric: MetricViews | None = None, metric_note: str | None = None
) -> tuple[Tensor, dict]:
    """Median-normalise, then make metric as ``scale.method`` says.

    Methods: ``network`` (the metric network's views, ``metric``; :func:`~modules.fusion.metric_scale.network_scale`),
    ``camera_height`` (metres; the floor is fitted below the camera), ``factor`` (multiplies the median-1 map),
    ``relative`` (median 1), and ``auto`` (the default): network if ``metric`` is given (a metric predictor whose
    weights are present), else camera height if given, else factor if given, else relative.

    Args:
        distance: [H, W] positive.
        scale: ``method``, ``camera_height``, ``factor``, ``floor`` (floor-fit options), ``seed`` (its RANSAC
            generator), ``network`` (options of the network estimate: ``saturation``, ``min_valid_fraction``);
            None: auto without anything given (relative).
        metric: the metric network's views (:func:`predict_metric_views`) or None.
        metric_note: why there is no metric network (recorded when ``auto`` falls back).
    Returns:
        the scaled distance and a description for meta.json (``units``, ``method``, ``method_requested``, ...).
    Raises:
        UserError: a method whose input is missing (e.g. ``network`` without a metric predictor).
    """
    scale = dict(scale or {})
    requested = _scale_method(scale)
    height, factor = scale.get("camera_height"), scale.get("factor")
    if height is not None and factor is not None:
        raise UserError("give scale.camera_height or scale.factor, not both")
    surface = torch.isfinite(distance) & (distance > 0)  # the sky (+inf) is no surface
    if not bool(surface.any()):
        return distance, {"units": "relative", "method": "none", "note": "no surface: every pixel is sky"}
    out = distance / distance[surface].median()
    method = requested
    if requested == "auto":
        method = ("network" if metric is not None else "camera_height" if height is not None
                  else "factor" if factor is not None else "relative")
    if method == "network":
        if metric is None:
            raise UserError(
                "scale.method=network needs a metric predictor: predictor=depth_pro, predictor=depth_anything_v2 "
                "with a metric_* variant, or predictor=joint_metric" + (f" ({metric_note})" if metric_note else "")
            )
        opts = dict(scale.get("network") or {})
        f, info = network_scale(out, metric.depth, metric.cameras, metric.max_depth, **opts)
        info["network"] = metric.source
        result = out * f
    elif method == "relative":
        result, info = out, {"units": "relative", "method": "median",
                             "note": "not metric: the median distance is 1; set scale.camera_height or scale.factor, "
                                     "or use a metric predictor"}
    else:
        if method == "camera_height" and height is None:
            raise UserError("scale.method=camera_height needs scale.camera_height (metres from camera to floor)")
        if method == "factor" and factor is None:
            raise UserError("scale.method=factor needs scale.factor")
        generator = torch.Generator(device=out.device).manual_seed(int(scale.get("seed", 0)))
        res = metric_scale(out, camera_height=height if method == "camera_height" else None,
                           factor=factor if method == "factor" else None,
                           floor=scale.get("floor"), relative="keep", generator=generator)
        result, info = out * res.factor, res.info
    info = {**info, "method_requested": requested}
    if requested == "auto" and metric is None and metric_note:
        info["metric_network_unavailable"] = metric_note
    return result, info


def invert_disparity(
    disparity: Tensor, confidence: Tensor, fill_iterations: int, source: str | None
) -> tuple[Tensor, Tensor]:
    """One image's disparity taken as 1 / distance (or 1 / depth) with its shift unknown (0).

    Args:
        disparity, confidence: [H, W].
        fill_iterations: how far invalid (non-finite or non-positive) pixels are filled from valid neighbours.
        source: the input file, for the error message.
    Returns:
        distance [H, W] (positive, holes filled) and confidence [H, W] (0 where the disparity was invalid).
    Raises:
        UserError: no pixel has a positive disparity.
    """
    valid = torch.isfinite(disparity) & (disparity > 0)
    if not bool(valid.any()):
        raise UserError(f"{source}: the predictor returned no positive disparity")
    distance = fill_holes(torch.where(valid, 1.0 / disparity, torch.zeros_like(disparity)), valid, fill_iterations)
    return distance, torch.where(valid, confidence.clamp(0, 1), torch.zeros_like(confidence))


def _metric_note(predictor: DepthPredictor) -> str | None:
    """Why a predictor has no metric network (``auto`` records it), e.g. joint's metric member without weights."""
    note = getattr(predictor, "metric_unavailable", None)
    if note:
        return str(note)
    return None if predictor.metric_source() is not None else "the predictor has no metric network"


class PanoramaPipeline:
    """Tangent-image pipeline.

    Args:
        projection: the faces (icosahedron or cubemap).
        predictor: relative disparity for a batch of faces.
        alignment: per-face scale/shift solver.
        blender: ERP blending.
        refinement: gradient-domain refinement (``refine(L0, gx, gy, wx, wy, fidelity) -> (L, info)``) or None.
        refine_height: ERP height at which the refinement is solved (its correction is upsampled to the output).
        device: where geometry and fusion run (``auto`` | ``cpu`` | ``cuda`` | ``mps``).
        scale: metric scale options (see :func:`apply_scale`); None: relative output with median 1.
        preprocess: callable applied to the face images [F, 3, S, S] before prediction (None: none).
        sky: a :class:`~modules.fusion.sky.SkyDetector` (None: every pixel is a surface); sky pixels get distance
            +inf and confidence 0, and alignment, blending and refinement leave them out.
    """

    def __init__(
        self,
        projection: TangentProjection,
        predictor: DepthPredictor,
        alignment: Alignment,
        blender: Blender,
        refinement=None,
        refine_height: int = 512,
        device: str = "cpu",
        scale: dict | None = None,
        preprocess=None,
        sky: SkyDetector | None = None,
    ):
        self.projection = projection
        self.predictor = predictor
        self.alignment = alignment
        self.blender = blender
        self.refinement = None if isinstance(refinement, NoRefinement) else refinement
        self.refine_height = int(refine_height)
        self.device = resolve_device(device)
        self.scale = scale
        self.preprocess = preprocess
        self.sky = sky if sky is not None and sky.enabled else None
        self._cameras = None

    def cameras(self, dtype: torch.dtype = torch.float32):
        if self._cameras is None:
            self._cameras = self.projection.cameras(self.device, dtype)
        return self._cameras

    def run(self, rgb: Tensor, image_path: str | None = None) -> PipelineResult:
        """Process one panorama.

        Args:
            rgb: [3, H, W] float RGB in [0, 1], W = 2 H.
            image_path: where it came from (predictors that need it, e.g. the synthetic one, use it).
        """
        if rgb.dim() != 3 or rgb.shape[0] != 3 or rgb.shape[2] != 2 * rgb.shape[1]:
            raise ValueError(f"expected an ERP image [3, H, 2H], got {tuple(rgb.shape)}")
        H, W = rgb.shape[1:]
        refine = ("refinement",) if self.refinement is not None else ()
        timer = StageTimer(("projection", "network", "alignment", "blending", *refine, "scale"))
        dev = self.device
        with timer("projection", dev):
            cams = self.cameras()
            faces_rgb = erp_to_faces(rgb.to(dev, torch.float32)[None], cams)[0].clamp(0, 1)  # [F, 3, S, S]
            if self.preprocess is not None:
                faces_rgb = self.preprocess(faces_rgb)
        with timer("network", dev):
            self.predictor.begin_panorama(image_path, (H, W))
            disparity, confidence = self.predictor.predict_with_confidence(faces_rgb, cams)
            metric = predict_metric_views(self.predictor, rgb.to(dev), self.scale, self.preprocess)
        pred = FacePredictions(disparity.to(dev, torch.float32), confidence.to(dev, torch.float32), cams)
        info = {}
        sky = None
        with timer("alignment", dev):
            if self.sky is None:
                aligned = self.alignment.align(sanitize_predictions(pred)[0])
            else:
                aligned, sky, info["sky"] = self.sky.align(self.alignment, pred, H, W)
        with timer("blending", dev):
            distance, conf = self.blender.blend(aligned, H, W)
        if self.refinement is not None:
            with timer("refinement", dev):
                distance, info["refinement"] = self._refine(aligned, distance)
        if sky is not None:
            distance, conf = SkyDetector.apply(distance, conf, sky)
        with timer("scale", dev):
            distance, scale_info = apply_scale(distance, self.scale, metric, _metric_note(self.predictor))
        return PipelineResult(
            distance=distance.float(),
            confidence=conf.float(),
            faces=aligned,
            timings=timer.seconds,
            info={"alignment": aligned.info, "scale": scale_info, "num_faces": cams.num_faces, **info},
        )

    def _refine(self, aligned: AlignedFaces, distance: Tensor) -> tuple[Tensor, dict]:
        """Solve the refinement at ``refine_height`` and apply its (upsampled) correction to the full-size map."""
        from .evaluation.evaluate import resize_map

        H, W = distance.shape
        h = min(H, self.refine_height)
        g = self.blender.log_gradients(aligned, h, 2 * h)
        L, info = self.refinement.refine(g["log_distance"], g["gx"], g["gy"], g["wx"], g["wy"], g["confidence"])
        correction = L - g["log_distance"]
        if not bool(torch.isfinite(correction).all()):
            log.warning("refinement produced non-finite values; keeping the blend unrefined")
            return distance, {**info, "solve_height": h, "applied": False}
        if h != H:
            correction = resize_map(correction, (H, W), erp=True)
        return distance * torch.exp(correction), {**info, "solve_height": h, "applied": True}


class EquirectPipeline:
    """The baseline: one predictor pass over the whole panorama, no tangent faces.

    The panorama is padded circularly in longitude by ``pad_fraction`` of its width on each side (so the network sees
    across the +-180 degree seam), predicted in one pass (the predictor resizes to its own input size and back),
    cropped, and its disparity is taken as inverse distance (a single image leaves the shift unknown: it is taken as
    0, non-positive values are invalid and filled from neighbours).

    Args:
        predictor: relative-disparity predictor.
        pad_fraction: circular padding on each side, as a fraction of the width (0 disables).
        device: where the post-processing runs.
        scale: metric scale options (see :func:`apply_scale`).
        fill_iterations: how far invalid pixels are filled from valid neighbours.
        preprocess: callable applied to the padded image [1, 3, H, W'] before prediction (None: none).
    """

    def __init__(self, predictor: DepthPredictor, pad_fraction: float = 0.125, device: str = "cpu",
                 scale: dict | None = None, fill_iterations: int = 512, preprocess=None):
        if not 0 <= pad_fraction <= 0.5:
            raise ValueError(f"pad_fraction must be in [0, 0.5], got {pad_fraction}")
        self.predictor = predictor
        self.pad_fraction = float(pad_fraction)
        self.device = resolve_device(device)
        self.scale = scale
        self.fill_iterations = int(fill_iterations)
        self.preprocess = preprocess

    def run(self, rgb: Tensor, image_path: str | None = None) -> PipelineResult:
        """rgb: [3, H, 2H] in [0, 1] -> distance and confidence [H, 2H]."""
        if rgb.dim() != 3 or rgb.shape[0] != 3 or rgb.shape[2] != 2 * rgb.shape[1]:
            raise ValueError(f"expected an ERP image [3, H, 2H], got {tuple(rgb.shape)}")
        H, W = rgb.shape[1:]
        timer = StageTimer(("projection", "network", "blending", "scale"))
        dev = self.device
        pad = int(round(self.pad_fraction * W))
        with timer("projection", dev):
            x = rgb.to(dev, torch.float32)[None]
            if pad:
                x = torch.cat((x[..., -pad:], x, x[..., :pad]), dim=-1)
            if self.preprocess is not None:
                x = self.preprocess(x)
        with timer("network", dev):
            self.predictor.begin_panorama(image_path, (H, W))
            disparity, confidence = self.predictor.predict_with_confidence(x, None)
            metric = predict_metric_views(self.predictor, rgb.to(dev), self.scale, self.preprocess)
        with timer("blending", dev):
            distance, conf = invert_disparity(disparity[0, :, pad:pad + W].to(dev, torch.float32),
                                              confidence[0, :, pad:pad + W].to(dev, torch.float32),
                                              self.fill_iterations, image_path)
        with timer("scale", dev):
            distance, scale_info = apply_scale(distance, self.scale, metric, _metric_note(self.predictor))
        return PipelineResult(distance.float(), conf, None, timer.seconds,
                              {"scale": scale_info, "method": "equirect", "pad_columns": pad})
