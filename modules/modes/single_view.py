"""mode=single_view: a perspective photo -> depth (z) -> point cloud and mesh files (through the same mesh-files
writer as mode=render_dense, so every export.dense.files / splats / point_cloud / previews option applies).

Intrinsics, in this order: ``mode.camera.fx`` (+ fy, cx, cy), else ``mode.camera.hfov_deg``, else the photo's EXIF
focal length (``use_exif``), else ``default_hfov_deg``. The predictor's disparity is taken as 1 / depth (one image
leaves its shift unknown: 0), median-normalised, then scaled by ``scale.factor`` when given.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..config import options_from
from ..dataset.io import load_image
from ..device import configure_runtime
from ..errors import UserError
from ..export.depth_files import write_distance_png, write_npy, write_preview
from ..export.mesh import perspective_grid_mesh
from ..export.mesh_files import FileOptions, PointCloudOptions, PreviewOptions, SplatOptions, write_mesh_assets
from ..export.outputs import write_meta
from ..export.pointcloud import write_point_cloud_ply
from ..export.splats import pinhole_splats
from ..geometry.pinhole import (
    PinholeIntrinsics,
    depth_to_points,
    intrinsics_from_exif,
    intrinsics_from_fov,
    intrinsics_from_params,
    points_to_pixels,
)
from ..pipeline import StageTimer, invert_disparity
from ..predictor_cache import predictor_from_config

log = logging.getLogger(__name__)


def camera_intrinsics(cam: DictConfig, image_path: str, width: int, height: int) -> PinholeIntrinsics:
    if cam.fx is not None:
        return intrinsics_from_params(width, height, cam.fx, cam.fy, cam.cx, cam.cy, cam.opencv_pixel_centres)
    if cam.hfov_deg is not None:
        return intrinsics_from_fov(width, height, cam.hfov_deg)
    if cam.use_exif:
        return intrinsics_from_exif(image_path, width, height, default_hfov_deg=cam.default_hfov_deg)
    return intrinsics_from_fov(width, height, cam.default_hfov_deg, source="default_fov")


def predict_depth(predictor, rgb: torch.Tensor, image_path: str, fill_iterations: int,
                  preprocess=None) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb [3, H, W] -> depth [H, W] (up to scale, holes filled) and confidence [H, W]."""
    predictor.begin_panorama(image_path, tuple(rgb.shape[1:]))
    image = rgb[None].to(predictor.device)
    disparity, confidence = predictor.predict_with_confidence(image if preprocess is None else preprocess(image), None)
    return invert_disparity(disparity[0].float().cpu(), confidence[0].float().cpu(), fill_iterations, image_path)


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    if cfg.scale.camera_height is not None:
        raise UserError("scale.camera_height needs a panorama (the floor below the camera); use scale.factor for a photo")
    if cfg.scale.method == "network":
        raise UserError("scale.method=network measures the metric views of a panorama; use scale.factor for a photo")
    image_path = str(cfg.dataset.image_path)
    rgb = load_image(image_path)
    H, W = rgb.shape[1:]
    K = camera_intrinsics(cfg.mode.camera, image_path, W, H)
    timer = StageTimer()
    predictor = predictor_from_config(cfg.predictor, cfg.scale.method)
    with timer("network"):
        depth, confidence = predict_depth(predictor, rgb, image_path, cfg.mode.fill_iterations,
                                          instantiate(cfg.preprocess, _convert_="all"))
    depth, scaled = instantiate(cfg.scale, _convert_="all")(depth)  # median 1, times scale.factor when given
    out = Path(cfg.paths.output_dir)
    ex, dense = cfg.export, cfg.export.dense
    start = time.perf_counter()
    write_npy(out / "depth.npy", depth)
    png = write_distance_png(out / "depth.png", depth, ex.distance_png.unit, ex.png_compress_level)
    write_preview(out / "depth_preview.png", depth, ex.preview.colormap, tuple(ex.preview.percentiles), ex.png_compress_level)
    write_npy(out / "confidence.npy", confidence)
    points = depth_to_points(depth, K)  # [H, W, 3]
    s = int(ex.pointcloud.stride)
    if ex.pointcloud.enabled:
        write_point_cloud_ply(out / "pointcloud.ply", points[::s, ::s].reshape(-1, 3),
                              rgb[:, ::s, ::s].permute(1, 2, 0).reshape(-1, 3), axes=ex.axes)
    mesh = perspective_grid_mesh(points, rgb, max_edge_stretch=dense.mesh.max_edge_stretch,
                                 max_grazing_deg=dense.mesh.max_grazing_deg)
    uv, _ = points_to_pixels(mesh.vertices, K)  # pixel centres at integers
    texture_uvs = torch.stack(((uv[:, 0] + 0.5) / W, 1.0 - (uv[:, 1] + 0.5) / H), dim=-1)

    def sample_points(stride: int):
        return (points[::stride, ::stride].reshape(-1, 3), rgb[:, ::stride, ::stride].permute(1, 2, 0).reshape(-1, 3))

    files, mesh_stats = write_mesh_assets(
        out, mesh, files=options_from(FileOptions, dense.files), splats=options_from(SplatOptions, dense.splats),
        point_cloud=options_from(PointCloudOptions, dense.point_cloud),
        previews=options_from(PreviewOptions, dense.previews),
        make_splats=lambda style: pinhole_splats(points, rgb, K.fx, K.fy, confidence, **asdict(style)),
        sample_points=sample_points, preview_map=depth, texture=rgb, texture_uvs=texture_uvs,
        camera_yfov_deg=K.vfov_deg, what=image_path)
    timer.seconds["writing"] = time.perf_counter() - start
    network = timer.seconds.pop("network")
    write_meta(out, cfg, input={"image_path": image_path, "height": H, "width": W},
               timings={"network": network, **timer.seconds},
               scale=scaled.info,
               predictor=predictor.describe(), intrinsics=K.describe(),
               distance_png={**png, "quantity": "depth (z)"},
               mesh={"vertices": mesh.num_vertices, "faces": mesh.num_faces,
                     "files": {k: v.name for k, v in files.items()}, **mesh_stats})
    log.info("wrote %s (%d mesh faces)", out, mesh.num_faces)
    return 0
