"""mode=single_view: perspective photos -> depth (z) -> point cloud and mesh files. One photo, or a folder / glob /
list of them, through the batch runner (resume, summary.json next to the outputs, completion marker, size guard);
the work on each photo is :mod:`modules.runtime.single_view` (job :data:`modules.runtime.jobs.JOBS`
``["single_view"]``)."""

from __future__ import annotations

from omegaconf import DictConfig

from ..errors import UserError
from .batch import run as run_batch


def run(cfg: DictConfig) -> int:
    if cfg.scale.camera_height is not None:
        raise UserError("scale.camera_height needs a panorama (the floor below the camera); use scale.factor for a photo")
    if cfg.scale.method == "network":
        raise UserError("scale.method=network measures the metric views of a panorama; use scale.factor for a photo")
    return run_batch(cfg)
