"""Dense 3D assets from an ERP distance map: what ``mode=render_dense`` calls.

:func:`export_dense_assets` scales the distances
(metric from camera height, a factor, or relative), builds the ERP grid mesh and writes, in ``out_dir``:

    mesh.ply  mesh.obj + mesh.mtl  mesh_texture.png  mesh.glb (texture inside, camera node)  mesh.fbx
    splats.ply (3DGS)       points.ply                                 preview_*.png

An earlier run directory is read by :mod:`modules.export.run_dir`; the files are written by
:mod:`modules.export.mesh_files`. Each group of options is a dataclass, built from a plain mapping (e.g. a Hydra config
node) by :func:`modules.config.options_from`; an unknown key is an error, so no config key goes unread. Conventions:
see mesh.py, axes.py and mesh_io.py (OpenCV axes inside; files in ``axes``, default glTF: Y up).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import options_from
from ..fusion.scale import Scale, ScaleResult
from ..geometry.erp_maps import InvalidDistanceError, check_distance_map
from .mesh import Mesh, erp_grid_mesh
from .mesh_open3d import decimate_mesh, poisson_mesh
from .mesh_files import (
    FileOptions,
    PointCloudOptions,
    PreviewOptions,
    SplatOptions,
    check_formats,
    write_mesh_assets,
)
from .pointcloud import erp_outlier_mask, erp_points
from .splats import erp_splats

__all__ = [
    "MeshOptions",
    "DenseExportResult",
    "export_dense_assets",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshOptions:
    """ERP grid mesh. ``max_edge_stretch`` / ``max_grazing_deg``: discontinuity cut (None disables each), ``skirt``:
    far-layer copies of the cut triangles (mesh.skirt_triangles);
    ``decimate_faces``: quadric decimation to about this many faces (None: off); ``poisson``: replace the grid
    mesh by a screened Poisson reconstruction of depth ``poisson_depth``, trimming the lowest
    ``poisson_density_quantile`` of densities."""

    stride: int = 1
    max_edge_stretch: float | None = 12.0
    max_grazing_deg: float | None = None
    close_poles: bool = True
    skirt: bool = True
    decimate_faces: int | None = None
    poisson: bool = False
    poisson_depth: int = 9
    poisson_density_quantile: float = 0.02


@dataclass(frozen=True)
class DenseExportResult:
    """Files written ({name: path}), the scale applied (``scale.info`` belongs in meta.json) and counts."""

    files: dict[str, Path]
    scale: ScaleResult
    stats: dict[str, Any]


def _build_mesh(distance: Tensor, rgb: Tensor | None, o: MeshOptions) -> Mesh:
    mesh = erp_grid_mesh(distance, rgb, stride=o.stride, max_edge_stretch=o.max_edge_stretch,
                         max_grazing_deg=o.max_grazing_deg, close_poles=o.close_poles, skirt=o.skirt)
    if mesh.num_faces == 0:
        raise InvalidDistanceError("the distance map gives no triangle (too few valid pixels, or every one was cut)")
    if o.poisson:
        mesh = poisson_mesh(mesh, depth=o.poisson_depth, density_quantile=o.poisson_density_quantile)
    if o.decimate_faces is not None:
        mesh = decimate_mesh(mesh, o.decimate_faces)
    return mesh


def export_dense_assets(
    distance: Tensor,
    rgb: Tensor | None,
    out_dir: str | os.PathLike,
    confidence: Tensor | None = None,
    *,
    mesh: MeshOptions | Mapping | None = None,
    files: FileOptions | Mapping | None = None,
    splats: SplatOptions | Mapping | None = None,
    point_cloud: PointCloudOptions | Mapping | None = None,
    previews: PreviewOptions | Mapping | None = None,
    scale: Scale | Mapping | None = None,
    generator: torch.Generator | None = None,
    axes: str = "gltf",
    sky_dome: float | None = None,
) -> DenseExportResult:
    """Scale the distances and write the mesh files (and splats, point cloud, previews when enabled).

    Args:
        distance: [H, W] ERP distance; NaN / inf / <= 0 pixels are invalid and dropped (+inf is the sky, see
            ``sky_dome``).
        rgb: [3, H, W] colours in [0, 1], or None (uncoloured files, no OBJ texture, no splats).
        out_dir: output directory (created).
        confidence: optional [H, W] in [0, 1] (splat opacity).
        mesh, files, splats, point_cloud, previews: option groups (dataclass, mapping or None).
        scale: the scale stage (:class:`~modules.fusion.scale.Scale` or its options; None: median 1).
        generator: torch.Generator for the floor fit.
        axes: frame of the mesh files and points.ply ("gltf", "blender_z_up", "opencv"; see mesh_io; GLB is
            always glTF, splats have their own ``splats.axes``).
        sky_dome: None: the sky is dropped; a number: sky pixels are put this many times the farthest surface away
            (a textured dome for viewers).
    Returns:
        :class:`DenseExportResult`; ``files`` keys: mesh_ply, mesh_obj, mesh_mtl, mesh_texture, mesh_glb,
        mesh_fbx, splats_ply, splats_splat, points_ply, preview_*.
    """
    mo, fo = options_from(MeshOptions, mesh), options_from(FileOptions, files)
    so, po = options_from(SplatOptions, splats), options_from(PointCloudOptions, point_cloud)
    vo, sc = options_from(PreviewOptions, previews), options_from(Scale, scale)
    check_formats(fo)
    valid = check_distance_map(distance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    scaled, scale_result = sc(distance, generator)
    d = torch.where(valid, scaled, torch.full_like(distance, float("nan")))
    if sky_dome is not None:  # sky (+inf) on a textured dome sky_dome x the farthest surface away, for viewers
        d = torch.where(torch.isposinf(distance), sky_dome * d[valid].max(), d)
    m = _build_mesh(d, rgb, mo)
    d_points, outliers = d, None
    if po.enabled and po.outlier_max_residual is not None:
        outliers = erp_outlier_mask(d, po.outlier_max_residual)
        d_points = torch.where(outliers, torch.full_like(d, float("nan")), d)
    written, stats = write_mesh_assets(
        out_dir, m, files=fo, splats=so, point_cloud=po, previews=vo, texture=rgb,
        make_splats=None if rgb is None else lambda style: erp_splats(
            d, rgb, confidence if so.confidence_opacity else None, **asdict(style)),
        sample_points=lambda stride: erp_points(d_points, rgb, stride=stride), preview_map=d,
        camera_yfov_deg=90.0, axes=axes, what="the run directory")
    if outliers is not None:
        stats["point_outliers"] = int(outliers.sum())
    stats = {"mesh_vertices": m.num_vertices, "mesh_faces": m.num_faces, "invalid_pixels": int((~valid).sum()),
             **stats}
    return DenseExportResult(written, scale_result, stats)
