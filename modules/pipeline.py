"""Panorama tensor -> globally consistent ERP distance + confidence, with per-stage timings.

    rgb [3, H, W] -> tangent faces (one batched grid_sample) -> predictor on all faces (batched)
      -> global alignment (closed-form, robust) -> blending into the ERP grid
      -> gradient-domain refinement (optional, solved at refinement.height, correction upsampled)
      -> scale (median 1, or metric: from a metric network's views, the camera height or a factor)

Stages are built from config by :func:`build_pipeline` (every stage ``hydra.utils.instantiate``-d from its group)
and passed in; the pipeline classes only run them.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from .device import resolve_device
from .errors import UserError
from .fusion.alignment import Alignment
from .fusion.metric_scale import metric_view_cameras
from .fusion.blending import Blender, fill_holes
from .fusion.faces import AlignedFaces, FacePredictions
from .fusion.refinement import NoRefinement
from .fusion.scale import MetricViews, Scale
from .geo_predictors.base import DepthPredictor
from .geometry.cache import ValueCache
from .fusion.sky import SkyDetector, sanitize_predictions
from .geometry.projections import IcosahedronProjection, TangentProjection
from .geometry.tangent import erp_to_faces
from .predictor_cache import predictor_from_config

log = logging.getLogger(__name__)

__all__ = ["PanoramaPipeline", "EquirectPipeline", "PipelineResult", "StageTimer", "build_pipeline", "build_equirect",
           "invert_disparity", "predict_metric_views", "PROGRESS"]

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
    def __call__(self, name: str, device: torch.device | None = None, report: bool = True) -> Iterator[None]:
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
            if report and self.progress is not None and name in self.stages:
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


def predict_metric_views(predictor: DepthPredictor, rgb: Tensor, scale: Scale, preprocess=None) -> MetricViews | None:
    """Run the predictor's metric source (if ``scale.method`` may use it) on its metric views of the panorama.

    The views look along the 20 directions of the level-0 icosahedron faces (whatever the projection), with the
    network's :class:`~modules.geo_predictors.base.MetricView` field of view and size.

    Args:
        predictor: the pipeline's predictor (its ``metric_source()`` gives the metric network, if any).
        rgb: [3, H, W] panorama in [0, 1] on the pipeline's device.
        scale: the scale stage (only its ``method`` is read here).
        preprocess: the face preprocessing, applied to the views too.
    Returns:
        None when the method is not ``network``/``auto`` or there is no metric source.
    """
    source = predictor.metric_source() if scale.may_use_network else None
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
        refinement: the refinement stage (``apply(blender, faces, distance, confidence) -> (distance, info)``,
            e.g. :class:`~modules.fusion.refinement.GradientRefinement`); None: none.
        device: where geometry and fusion run (``auto`` | ``cpu`` | ``cuda`` | ``mps``).
        scale: the scale stage (:class:`~modules.fusion.scale.Scale`); None: relative output with median 1.
        preprocess: callable applied to the face images [F, 3, S, S] before prediction (None: none).
        sky: a :class:`~modules.fusion.sky.SkyDetector` (None: every pixel is a surface); sky pixels get distance
            +inf and confidence 0, and alignment, blending and refinement leave them out. When it finds sky on at
            least ``projection.outdoor_sky_fraction`` of the panorama, the faces of the further rotated copies up
            to ``projection.outdoor_rotations`` are predicted too and all faces aligned again (an outdoor pass).
    """

    def __init__(
        self,
        projection: TangentProjection,
        predictor: DepthPredictor,
        alignment: Alignment,
        blender: Blender,
        refinement=None,
        device: str = "cpu",
        scale: Scale | None = None,
        preprocess=None,
        sky: SkyDetector | None = None,
    ):
        self.projection = projection
        self.predictor = predictor
        self.alignment = alignment
        self.blender = blender
        self.refinement = refinement if refinement is not None else NoRefinement()
        self.device = resolve_device(device)
        self.scale = scale if scale is not None else Scale()
        self.preprocess = preprocess
        self.sky = sky if sky is not None and sky.enabled else None
        #: the faces' cameras, built on first use: [False] the `rotations` copies, [True] the `outdoor_rotations` ones
        self._cameras: dict = {}
        #: derived geometry of the stages (samples, sparse patterns) keyed by value; shared by the stages
        self.cache = ValueCache()
        for stage in (alignment, blender, self.sky, self.refinement):
            if hasattr(stage, "cache"):
                stage.cache = self.cache

    def cameras(self, dtype: torch.dtype = torch.float32, outdoor: bool = False):
        """The faces' cameras (float32 on the pipeline's device): the ``projection.rotations`` copies, or with
        ``outdoor`` the ``projection.outdoor_rotations`` copies (the first ones the same faces)."""
        if outdoor not in self._cameras:
            rotations = self.projection.outdoor_rotations if outdoor else None
            self._cameras[outdoor] = self.projection.cameras(self.device, dtype, rotations)
        return self._cameras[outdoor]

    def _outdoor_pass(self, sky_report: dict | None) -> bool:
        """Whether the first pass's sky report (None without sky detection) asks for the outdoor copies (and there
        are more of them)."""
        return (sky_report is not None and self.projection.outdoor_rotations > self.projection.rotations
                and sky_report.get("sky_fraction", 0.0) >= self.projection.outdoor_sky_fraction)

    def _predict(self, rgb: Tensor, cams, timer: StageTimer, report: bool = True):
        """Project the panorama into ``cams`` and predict them: (disparity, confidence) [F, S, S] on the device.
        ``report``: tell the projection's end to :data:`PROGRESS` (the network's is told after the metric views)."""
        dev = self.device
        with timer("projection", dev, report):
            faces_rgb = erp_to_faces(rgb.to(dev, torch.float32)[None], cams)[0].clamp_(0, 1)  # [F, 3, S, S], in place
            if self.preprocess is not None:
                faces_rgb = self.preprocess(faces_rgb)
        with timer("network", dev, report=False):  # told with the metric views, below
            disparity, confidence = self.predictor.predict_with_confidence(faces_rgb, cams)
        return disparity.to(dev, torch.float32), confidence.to(dev, torch.float32)

    def run(self, rgb: Tensor, image_path: str | None = None) -> PipelineResult:
        """Process one panorama.

        Args:
            rgb: [3, H, W] float RGB in [0, 1], W = 2 H.
            image_path: where it came from (predictors that need it, e.g. the synthetic one, use it).
        """
        if rgb.dim() != 3 or rgb.shape[0] != 3 or rgb.shape[2] != 2 * rgb.shape[1]:
            raise ValueError(f"expected an ERP image [3, H, 2H], got {tuple(rgb.shape)}")
        H, W = rgb.shape[1:]
        timer = StageTimer(("projection", "network", "alignment", "blending", "refinement", "scale"))
        dev = self.device
        with timer("projection", dev, report=False):  # told when the faces are projected (_predict)
            cams = self.cameras()
        with timer("network", dev, report=False):
            self.predictor.begin_panorama(image_path, (H, W))
        disparity, confidence = self._predict(rgb, cams, timer)
        with timer("network", dev):
            metric = predict_metric_views(self.predictor, rgb.to(dev), self.scale, self.preprocess)
        pred = FacePredictions(disparity, confidence, cams)
        info = {}
        sky = None
        with timer("alignment", dev):
            if self.sky is None:
                aligned = self.alignment.align(sanitize_predictions(pred)[0])
            else:
                aligned, sky, info["sky"] = self.sky.align(self.alignment, pred, H, W)
        if self._outdoor_pass(info.get("sky")):
            # open sky: the further rotated copies' faces too, then every face aligned again (the first copies'
            # predictions are kept; only the new faces go through the network)
            first = info["sky"]["sky_fraction"]
            with timer("projection", dev, report=False):
                all_cams = self.cameras(outdoor=True)
                new = all_cams.select(slice(cams.num_faces, None))
            more = self.projection.outdoor_rotations - self.projection.rotations
            log.info("open sky on %.0f %% of the panorama: adding the %d faces of %d more rotated %s "
                     "(projection.outdoor_rotations=%d; set it to 1 for one pass)", 100 * first, new.num_faces, more,
                     "copy" if more == 1 else "copies", self.projection.outdoor_rotations)
            d_new, c_new = self._predict(rgb, new, timer, report=False)
            pred = FacePredictions(torch.cat([pred.disparity, d_new]), torch.cat([pred.confidence, c_new]), all_cams)
            with timer("alignment", dev, report=False):
                aligned, sky, info["sky"] = self.sky.align(self.alignment, pred, H, W)
            info["outdoor_pass"] = {"first_sky_fraction": first, "rotations": self.projection.outdoor_rotations,
                                    "faces": all_cams.num_faces}
            cams = all_cams
        with timer("blending", dev):
            distance, conf = self.blender.blend(aligned, H, W)
        with timer("refinement", dev):
            distance, refined = self.refinement.apply(self.blender, aligned, distance, conf)
        if refined:
            info["refinement"] = refined
        if sky is not None:
            with timer("sky", dev):  # the output's final mask (halos by colour, the far limit), the surfaces next to it
                distance, conf, sky = self.sky.finish(distance, conf, sky, rgb, cams)
        with timer("scale", dev):
            distance, scaled = self.scale(distance, metric=metric, metric_note=_metric_note(self.predictor))
            scale_info = scaled.info
        return PipelineResult(
            distance=distance.float(),
            confidence=conf.float(),
            faces=aligned,
            timings=timer.seconds,
            info={"alignment": aligned.info, "scale": scale_info, "num_faces": cams.num_faces, **info},
        )


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
        scale: the scale stage (:class:`~modules.fusion.scale.Scale`); None: relative output with median 1.
        fill_iterations: how far invalid pixels are filled from valid neighbours.
        preprocess: callable applied to the padded image [1, 3, H, W'] before prediction (None: none).
    """

    def __init__(self, predictor: DepthPredictor, pad_fraction: float = 0.125, device: str = "cpu",
                 scale: Scale | None = None, fill_iterations: int = 512, preprocess=None):
        if not 0 <= pad_fraction <= 0.5:
            raise ValueError(f"pad_fraction must be in [0, 0.5], got {pad_fraction}")
        self.predictor = predictor
        self.pad_fraction = float(pad_fraction)
        self.device = resolve_device(device)
        self.scale = scale if scale is not None else Scale()
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
            distance, scaled = self.scale(distance, metric=metric, metric_note=_metric_note(self.predictor))
            scale_info = scaled.info
        return PipelineResult(distance.float(), conf, None, timer.seconds,
                              {"scale": scale_info, "method": "equirect", "pad_columns": pad})


def build_pipeline(cfg: DictConfig, predictor=None) -> PanoramaPipeline:
    """The tangent pipeline with every stage instantiated from its config group (``_target_``).

    ``predictor`` may be passed in to reuse a loaded model across panoramas.
    """
    return PanoramaPipeline(
        projection=instantiate(cfg.projection),
        predictor=predictor if predictor is not None else predictor_from_config(cfg.predictor, cfg.scale.method),
        alignment=instantiate(cfg.alignment),
        blender=instantiate(cfg.fusion.blender),
        refinement=instantiate(cfg.refinement),
        device=cfg.runtime.device,
        scale=instantiate(cfg.scale, _convert_="all"),
        preprocess=instantiate(cfg.preprocess, _convert_="all"),
        sky=instantiate(cfg.fusion.sky),
    )


def build_equirect(cfg: DictConfig, predictor=None, *, pad_fraction: float, fill_iterations: int) -> EquirectPipeline:
    """The one-pass baseline built from config (mode=equirect passes its ``mode.pad_fraction`` and
    ``mode.fill_iterations``; mode=eval the options of its ``mode.pipeline``); the predictor may be passed in."""
    return EquirectPipeline(
        predictor if predictor is not None else predictor_from_config(cfg.predictor, cfg.scale.method),
        pad_fraction=pad_fraction,
        device=cfg.runtime.device,
        scale=instantiate(cfg.scale, _convert_="all"),
        fill_iterations=fill_iterations,
        preprocess=instantiate(cfg.preprocess, _convert_="all"),
    )
