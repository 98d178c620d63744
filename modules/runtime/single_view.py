"""mode=single_view's work on each photo (one image or a folder / glob / list, through the batch runner like the
panorama modes): a perspective photo -> depth (z) -> point cloud and mesh files (through the same mesh-files writer
as mode=render_dense, so every export.dense.files / splats / point_cloud / previews option applies).

Intrinsics, in this order: ``mode.camera.fx`` (+ fy, cx, cy), else ``mode.camera.hfov_deg``, else the photo's EXIF
focal length (``use_exif``), else ``default_hfov_deg``. The predictor's disparity is taken as 1 / depth (one image
leaves its shift unknown: 0), median-normalised, then scaled by ``scale.factor`` when given.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from ..config import options_from
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


@dataclass
class SingleViewResult:
    """One photo's prediction: ``depth`` [H, W] (z, median 1 or scaled), ``confidence`` [H, W], the intrinsics,
    seconds per stage and the scale's info."""

    depth: Tensor
    confidence: Tensor
    intrinsics: PinholeIntrinsics
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


class SingleViewPipeline:
    """The predictor (loaded once), the face enhancement and the scale of a config; ``run`` predicts one photo."""

    def __init__(self, cfg: DictConfig, predictor=None):
        self.cfg = cfg
        self.predictor = predictor if predictor is not None else predictor_from_config(cfg.predictor, cfg.scale.method)
        self.preprocess = instantiate(cfg.preprocess, _convert_="all")
        self.scale = instantiate(cfg.scale, _convert_="all")

    def run(self, rgb: Tensor, image_path: str) -> SingleViewResult:
        H, W = rgb.shape[1:]
        K = camera_intrinsics(self.cfg.mode.camera, image_path, W, H)
        timer = StageTimer()
        with timer("network"):
            depth, confidence = predict_depth(self.predictor, rgb, image_path, self.cfg.mode.fill_iterations,
                                              self.preprocess)
        depth, scaled = self.scale(depth)  # median 1, times scale.factor when given
        return SingleViewResult(depth, confidence, K, dict(timer.seconds), {"scale": scaled.info})


def write_single_view(out: Path, rgb: Tensor, result: SingleViewResult, cfg: DictConfig, image_path: str,
                      extra: dict, input_info: dict | None = None) -> dict:
    """depth.npy / png / preview, confidence.npy, the point cloud, the mesh files and, last, meta.json."""
    depth, confidence, K = result.depth, result.confidence, result.intrinsics
    H, W = rgb.shape[1:]
    ex, dense = cfg.export, cfg.export.dense
    start = time.perf_counter()
    write_npy(out / "depth.npy", depth)
    png = write_distance_png(out / "depth.png", depth, ex.distance_png.unit, ex.png_compress_level)
    write_preview(out / "depth_preview.png", depth, ex.preview.colormap, tuple(ex.preview.percentiles),
                  ex.png_compress_level)
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
    timings = dict(result.timings)
    timings["writing"] = time.perf_counter() - start
    log.info("wrote %s (%d mesh faces)", image_path, mesh.num_faces)
    return write_meta(out, cfg, input={"image_path": image_path, "height": int(H), "width": int(W),
                                       **(input_info or {})},
                      timings=timings, scale=result.info.get("scale"), intrinsics=K.describe(),
                      distance_png={**png, "quantity": "depth (z)"},
                      mesh={"vertices": mesh.num_vertices, "faces": mesh.num_faces,
                            "files": {k: v.name for k, v in files.items()}, **mesh_stats}, **extra)
