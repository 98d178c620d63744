"""mode=voxel: distance (panorama) or depth (single view) -> coloured occupancy grid -> MagicaVoxel .vox and .npy.

The points come from an earlier run directory (``mode.run_dir``: a panorama run's distance.npy, or a single_view
run's depth.npy with its intrinsics from meta.json) or from running the tangent pipeline on ``dataset.image_path``
(one image or a folder / glob / list, through the batch runner: job :data:`modules.runtime.jobs.JOBS` ``["voxel"]``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..device import configure_runtime
from ..export.outputs import write_meta
from ..export.pointcloud import erp_points
from ..export.run_dir import read_run
from ..geometry.pinhole import depth_to_points
from ..runtime.jobs import write_voxel_files
from .batch import run as run_batch

log = logging.getLogger(__name__)


def points_from_run(run_dir: Path, stride: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(points [N, 3], colours [N, 3] or None, meta) of an earlier run directory (:func:`read_run`)."""
    run = read_run(run_dir)
    if run.kind == "panorama":
        return (*erp_points(run.values, run.rgb, stride), run.meta)
    points = depth_to_points(run.values, run.intrinsics)[::stride, ::stride]
    valid = torch.isfinite(points).all(-1)
    colours = None if run.rgb is None else run.rgb[:, ::stride, ::stride].permute(1, 2, 0)[valid]
    return points[valid], colours, run.meta


def run(cfg: DictConfig) -> int:
    v = cfg.mode
    if not v.run_dir:
        return run_batch(cfg)
    configure_runtime(cfg)
    out = Path(cfg.paths.output_dir)
    points, colours, run_meta = points_from_run(Path(v.run_dir), int(v.stride))
    start = time.perf_counter()
    grid = write_voxel_files(out, points, colours, v)
    write_meta(out, cfg, input={"run_dir": str(v.run_dir)}, timings={"voxels": time.perf_counter() - start},
               scale=run_meta.get("scale"), predictor=run_meta.get("predictor"), voxels=grid.describe())
    log.info("wrote %s/voxels.vox (%s)", out, grid.describe())
    print(f"outputs: {out}", flush=True)
    return 0
