"""Panorama tensor -> globally consistent ERP distance + confidence, with per-stage timings.

    rgb [3, H, W] -> tangent faces (one batched grid_sample) -> predictor on all faces (batched)
      -> global alignment (closed-form, robust) -> blending into the ERP grid -> scale (median 1 or metric)

Stages are built from config (``hydra.utils.instantiate``) and passed in; this module only runs them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from .fusion.alignment import Alignment
from .fusion.blending import Blender
from .fusion.faces import AlignedFaces, FacePredictions
from .geo_predictors.base import DepthPredictor, resolve_device
from .geometry.projections import TangentProjection
from .geometry.tangent import erp_to_faces

__all__ = ["PanoramaPipeline", "PipelineResult", "StageTimer", "apply_scale"]


class StageTimer:
    """Wall-clock seconds per named stage (synchronising the GPU so that times are real)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

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


@dataclass
class PipelineResult:
    """Output of one panorama.

    Attributes:
        distance: [H, W] float32 ERP distance (relative with median 1, or metric when a scale was given).
        confidence: [H, W] float32 in [0, 1].
        faces: the aligned faces (for diagnostics and exports).
        timings: seconds per stage; ``network`` holds the predictor's time, the rest are the non-network stages.
        info: what each stage reports (alignment solution, scale ...).
    """

    distance: Tensor
    confidence: Tensor
    faces: AlignedFaces
    timings: dict[str, float]
    info: dict = field(default_factory=dict)


def apply_scale(distance: Tensor, factor: float | None) -> tuple[Tensor, dict]:
    """Relative (median 1) when ``factor`` is None, else metric: ``distance * factor`` after median normalisation."""
    median = distance[distance > 0].median()
    out = distance / median
    if factor is None:
        return out, {"kind": "relative", "note": "distance is relative: its median is 1"}
    if not factor > 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    return out * factor, {"kind": "metric", "factor": float(factor)}


class PanoramaPipeline:
    """Tangent-image pipeline.

    Args:
        projection: the faces (icosahedron or cubemap).
        predictor: relative disparity for a batch of faces.
        alignment: per-face scale/shift solver.
        blender: ERP blending.
        device: where geometry and fusion run (``auto`` | ``cpu`` | ``cuda`` | ``mps``).
        scale_factor: metric scale applied after median normalisation (None: relative output).
    """

    def __init__(
        self,
        projection: TangentProjection,
        predictor: DepthPredictor,
        alignment: Alignment,
        blender: Blender,
        device: str = "cpu",
        scale_factor: float | None = None,
    ):
        self.projection = projection
        self.predictor = predictor
        self.alignment = alignment
        self.blender = blender
        self.device = resolve_device(device)
        self.scale_factor = scale_factor
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
        timer = StageTimer()
        dev = self.device
        with timer("projection", dev):
            cams = self.cameras()
            faces_rgb = erp_to_faces(rgb.to(dev, torch.float32)[None], cams)[0].clamp(0, 1)  # [F, 3, S, S]
        with timer("network", dev):
            self.predictor.begin_panorama(image_path, (H, W))
            disparity, confidence = self.predictor.predict_with_confidence(faces_rgb, cams)
        pred = FacePredictions(disparity.to(dev, torch.float32), confidence.to(dev, torch.float32), cams)
        with timer("alignment", dev):
            aligned = self.alignment.align(pred)
        with timer("blending", dev):
            distance, conf = self.blender.blend(aligned, H, W)
            distance, scale_info = apply_scale(distance, self.scale_factor)
        return PipelineResult(
            distance=distance.float(),
            confidence=conf.float(),
            faces=aligned,
            timings=timer.seconds,
            info={"alignment": aligned.info, "scale": scale_info, "num_faces": cams.num_faces},
        )
