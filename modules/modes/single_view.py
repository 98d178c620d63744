"""mode=single_view: a perspective photo -> depth (z) -> point cloud and mesh files.

Intrinsics, in this order: ``mode.camera.fx`` (+ fy, cx, cy), else ``mode.camera.hfov_deg``, else the photo's EXIF
focal length (``use_exif``), else ``default_hfov_deg``. The predictor's disparity is taken as 1 / depth (one image
leaves its shift unknown: 0), median-normalised, then scaled by ``scale.factor`` when given.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..config import to_container
from ..dataset.io import load_image
from ..errors import UserError
from ..export.depth_files import write_distance_png, write_json, write_npy, write_preview
from ..export.mesh import perspective_grid_mesh
from ..export.mesh_io import write_mesh_fbx, write_mesh_glb, write_mesh_obj, write_mesh_ply
from ..export.pointcloud import write_point_cloud_ply
from ..geometry.pinhole import PinholeIntrinsics, depth_to_points, intrinsics_from_exif, intrinsics_from_fov, intrinsics_from_params
from ..pipeline import StageTimer, invert_disparity
from ..predictor_cache import predictor_from_config
from .common import configure_runtime

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
    """rgb [3, H, W] -> depth [H, W] (median 1, holes filled) and confidence [H, W]."""
    predictor.begin_panorama(image_path, tuple(rgb.shape[1:]))
    image = rgb[None].to(predictor.device)
    disparity, confidence = predictor.predict_with_confidence(image if preprocess is None else preprocess(image), None)
    depth, conf = invert_disparity(disparity[0].float().cpu(), confidence[0].float().cpu(), fill_iterations, image_path)
    return depth / depth.median(), conf


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
        depth, confidence = predict_depth(predictor, rgb, image_path, cfg.fusion.blender.fill_iterations,
                                          instantiate(cfg.preprocess, _convert_="all"))
    factor = 1.0 if cfg.scale.factor is None else float(cfg.scale.factor)
    depth = depth * factor
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
    formats = list(dense.files.formats)
    if "ply" in formats:
        write_mesh_ply(out / "mesh.ply", mesh, axes=ex.axes, normals=dense.files.normals)
    if "obj" in formats:
        write_mesh_obj(out / "mesh.obj", mesh, axes=ex.axes, normals=dense.files.normals)
    if "glb" in formats:
        write_mesh_glb(out / "mesh.glb", mesh, camera=dense.files.glb_camera, camera_yfov_deg=K.vfov_deg,
                       unlit=dense.files.glb_unlit, double_sided=dense.files.glb_double_sided,
                       normals=dense.files.normals)
    if "fbx" in formats:
        write_mesh_fbx(out / "mesh.fbx", mesh, unit_scale=dense.files.fbx_unit_scale, axes=ex.axes,
                       normals=dense.files.normals, compress_level=dense.files.fbx_compress_level)
    timer.seconds["writing"] = time.perf_counter() - start
    network = timer.seconds.pop("network")
    write_json(out / "meta.json", {
        "input": {"image_path": image_path, "height": H, "width": W},
        "intrinsics": K.describe(),
        "distance_png": {**png, "quantity": "depth (z)"},
        "scale": {"units": "relative" if cfg.scale.factor is None else "given factor", "factor": factor,
                  "note": "depth median is 1 before scale.factor"},
        "mesh": {"vertices": mesh.num_vertices, "faces": mesh.num_faces},
        "predictor": predictor.describe(),
        "timings": {"network": network, "non_network": timer.seconds, "non_network_total": sum(timer.seconds.values())},
        "config": to_container(cfg),
    })
    log.info("wrote %s (%d mesh faces)", out, mesh.num_faces)
    return 0
