"""mode=voxel: distance (panorama) or depth (single view) -> coloured occupancy grid -> MagicaVoxel .vox and .npy.

The points come from an earlier run directory (``mode.run_dir``: a panorama run's distance.npy, or a single_view
run's depth.npy with its intrinsics from meta.json) or from running the tangent pipeline on ``dataset.image_path``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..dataset.io import load_image, load_panorama
from ..device import configure_runtime
from ..errors import UserError
from ..export.outputs import write_meta
from ..export.pointcloud import erp_points
from ..export.voxel import voxelize_points, write_vox, write_voxel_npy
from ..geometry.pinhole import PinholeIntrinsics, depth_to_points
from ..pipeline import build_pipeline

log = logging.getLogger(__name__)


def points_from_run(run_dir: Path, stride: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(points [N, 3], colours [N, 3] or None, meta) of an earlier run directory."""
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    image = meta.get("input", {}).get("image_path")
    if (run_dir / "distance.npy").is_file():
        distance = torch.from_numpy(np.load(run_dir / "distance.npy"))
        rgb = load_panorama(image) if image and Path(image).is_file() else None
        if rgb is not None and tuple(rgb.shape[1:]) != tuple(distance.shape):
            rgb = None
        return (*erp_points(distance, rgb, stride), meta)
    if (run_dir / "depth.npy").is_file():
        if "intrinsics" not in meta:
            raise UserError(f"{run_dir}: depth.npy without intrinsics in meta.json")
        k = meta["intrinsics"]
        K = PinholeIntrinsics(k["fx"], k["fy"], k["cx"], k["cy"], k["width"], k["height"], k.get("source", "meta"))
        depth = torch.from_numpy(np.load(run_dir / "depth.npy"))
        pts = depth_to_points(depth, K)[::stride, ::stride].reshape(-1, 3)
        rgb = load_image(image) if image and Path(image).is_file() else None
        cols = None if rgb is None else rgb[:, ::stride, ::stride].permute(1, 2, 0).reshape(-1, 3)
        return pts, cols, meta
    raise UserError(f"{run_dir}: no distance.npy or depth.npy (not a run directory of mode=predict or single_view)")


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
