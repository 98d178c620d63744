"""mode=voxel: distance (panorama) or depth (single view) -> coloured occupancy grid -> MagicaVoxel .vox and .npy.

The points come from an earlier run directory (``mode.run_dir``: a panorama run's distance.npy, or a single_view
run's depth.npy with its intrinsics from meta.json) or from running the tangent pipeline on ``dataset.image_path``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..dataset.io import load_panorama
from ..device import configure_runtime
from ..export.outputs import write_meta
from ..export.pointcloud import erp_points
from ..export.run_dir import read_run
from ..export.voxel import voxelize_points, write_vox, write_voxel_npy
from ..geometry.pinhole import depth_to_points
from ..pipeline import build_pipeline

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
    configure_runtime(cfg)
    v = cfg.mode
    out = Path(cfg.paths.output_dir)
    timings: dict[str, float] = {}
    if v.run_dir:
        points, colours, run_meta = points_from_run(Path(v.run_dir), int(v.stride))
        source = {"run_dir": str(v.run_dir)}
        scale, predictor = run_meta.get("scale"), run_meta.get("predictor")
    else:
        image_path = str(cfg.dataset.image_path)
        rgb = load_panorama(image_path, min_height=cfg.dataset.min_height)
        pipeline = build_pipeline(cfg)
        result = pipeline.run(rgb, image_path)
        timings.update(result.timings)
        points, colours = erp_points(result.distance.cpu(), rgb, int(v.stride))
        source = {"image_path": image_path, "height": int(rgb.shape[1]), "width": int(rgb.shape[2])}
        scale, predictor = result.info.get("scale"), pipeline.predictor.describe()
    start = time.perf_counter()
    bounds = None if v.bounds is None else torch.tensor(v.bounds, dtype=points.dtype)
    grid = voxelize_points(points, colours, resolution=int(v.resolution), bounds=bounds,
                           min_points=int(v.min_points), bounds_quantile=float(v.bounds_quantile))
    write_vox(out / "voxels.vox", grid, palette_method=v.palette_method, default_colour=tuple(v.default_colour))
    write_voxel_npy(out / "voxels.npy", grid, default_colour=tuple(v.default_colour))
    timings["voxels"] = time.perf_counter() - start
    write_meta(out, cfg, input=source, timings=timings, scale=scale, predictor=predictor, voxels=grid.describe())
    log.info("wrote %s/voxels.vox (%s)", out, grid.describe())
    return 0
