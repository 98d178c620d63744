"""Point clouds from an ERP distance map: one coloured point per (subsampled) valid pixel, written as PLY.

Camera at the origin, OpenCV axes (x right, y down, z forward). :func:`process_point_cloud` optionally cleans
the cloud with Open3D: statistical outlier removal, voxel downsampling (colours averaged per voxel) and normals
(estimated from neighbours, oriented towards the camera). Each step is a parameter; None / False disables it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from ..extras import require
from ..geometry.spherical import erp_directions
from .atomic import atomic_path
from .axes import to_axes
from .ply import ply_bytes

__all__ = ["erp_points", "erp_outlier_mask", "process_point_cloud", "write_point_cloud_ply"]


def erp_points(distance: Tensor, rgb: Tensor | None = None, stride: int = 1) -> tuple[Tensor, Tensor | None]:
    """Back-project an ERP distance map to 3D points (camera at the origin, OpenCV axes).

    Args:
        distance: [H, W] Euclidean distance along each pixel's ray; non-finite or <= 0 pixels are dropped.
        rgb: optional [3, H, W] colours in [0, 1].
        stride: keep every ``stride``-th row and column.
    Returns:
        points [N, 3] and colours [N, 3] (or None), on ``distance``'s device and dtype.
    """
    H, W = distance.shape
    dirs = erp_directions(H, W, distance.device, distance.dtype, stride)
    d = distance[::stride, ::stride]
    valid = torch.isfinite(d) & (d > 0)
    points = dirs[valid] * d[valid][:, None]
    colours = None if rgb is None else rgb[:, ::stride, ::stride].permute(1, 2, 0)[valid]
    return points, colours


def _shift(x: Tensor, dv: int, du: int, fill) -> Tensor:
    """x[v + dv, u + du] on the ERP grid: columns wrap around (longitude), rows beyond the poles get ``fill``.
    x: [H, W, ...]."""
    y = torch.roll(x, shifts=-du, dims=1)
    if dv == 0:
        return y
    out = torch.full_like(y, fill)
    if dv > 0:
        out[:-dv] = y[dv:]
    else:
        out[-dv:] = y[:dv]
    return out


def erp_outlier_mask(distance: Tensor, max_residual: float = 0.03) -> Tensor:
    """Isolated wrong distances ("flying" pixels) on an ERP distance map, keeping corners, creases and depth edges.

    A pixel is kept when at least one of its lines of neighbours predicts it: inverse distance is linear in the ray
    direction on any plane (``1 / d = n . r / h``), so on a surface the pixel's inverse distance is the mean of its two
    opposite neighbours' (4 lines through it: row, column, two diagonals) or the linear extrapolation ``2 a - b``
    from two neighbours on one side (8 directions; this keeps the last pixel before a depth edge and the tip of a
    silhouette corner). On a crease (a room corner) the line along it predicts exactly; at a depth edge the lines
    on the pixel's own side do. An isolated wrong value disagrees with every line. The residual is relative:
    ``|1/d - prediction| * d``; a pixel is an outlier when the smallest over the 12 lines exceeds ``max_residual``.

    Args:
        distance: [H, W]; NaN / inf / <= 0 pixels are invalid (never outliers, never predictors).
        max_residual: relative tolerance (0.03: 3 % of the distance).
    Returns:
        [H, W] bool, True for outliers (valid pixels to drop), on ``distance``'s device.
    """
    if distance.ndim != 2:
        raise ValueError(f"distance must be [H, W], got {tuple(distance.shape)}")
    if not max_residual > 0:
        raise ValueError(f"max_residual must be positive, got {max_residual}")
    valid = torch.isfinite(distance) & (distance > 0)
    inv = torch.where(valid, 1.0 / distance, torch.full_like(distance, float("nan")))
    best = torch.full_like(distance, float("inf"))
    directions = [(0, 1), (1, 0), (1, 1), (1, -1)]
    for dv, du in directions:  # two-sided: mean of the opposite neighbours
        pred = 0.5 * (_shift(inv, dv, du, float("nan")) + _shift(inv, -dv, -du, float("nan")))
        best = torch.fmin(best, (inv - pred).abs() * distance)
    for dv, du in directions + [(-a, -b) for a, b in directions]:  # one-sided: 2 a - b
        pred = 2.0 * _shift(inv, dv, du, float("nan")) - _shift(inv, 2 * dv, 2 * du, float("nan"))
        best = torch.fmin(best, (inv - pred).abs() * distance)
    return valid & ~(best <= max_residual)


def process_point_cloud(
    points: Tensor,
    colours: Tensor | None = None,
    *,
    sor_neighbors: int | None = 20,
    sor_std_ratio: float = 2.0,
    voxel_size: float | None = None,
    normals: bool = True,
    normal_radius: float | None = None,
    normal_max_nn: int = 30,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Clean a point cloud with Open3D.

    Args:
        points: [N, 3] (non-finite rows are dropped first).
        colours: optional [N, 3] in [0, 1].
        sor_neighbors: statistical outlier removal: neighbours per point (None disables the step).
        sor_std_ratio: ... drop points whose mean neighbour distance exceeds mean + ratio * std.
        voxel_size: voxel downsampling edge length in scene units (None disables it).
        normals: estimate normals (oriented towards the camera at the origin).
        normal_radius: neighbourhood radius for the normals (scene units); None: nearest ``normal_max_nn`` only.
        normal_max_nn: most neighbours for the normals.
    Returns:
        points [M, 3], colours [M, 3] or None, normals [M, 3] or None, on ``points``' device and dtype.
    """
    o3d = require("open3d", "point-cloud processing (outlier removal, downsampling, normals)")

    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if colours is not None and tuple(colours.shape) != tuple(points.shape):
        raise ValueError(f"colours must be [N, 3] like points {tuple(points.shape)}, got {tuple(colours.shape)}")
    if voxel_size is not None and not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive or None, got {voxel_size}")
    finite = torch.isfinite(points).all(dim=1)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[finite].detach().cpu().double().numpy()))
    if colours is not None:
        pcd.colors = o3d.utility.Vector3dVector(colours[finite].detach().cpu().double().clamp(0, 1).numpy())
    if sor_neighbors is not None and len(pcd.points) > sor_neighbors:
        pcd, _ = pcd.remove_statistical_outlier(nb_neighbors=int(sor_neighbors), std_ratio=float(sor_std_ratio))
    if voxel_size is not None:
        pcd = pcd.voxel_down_sample(float(voxel_size))
    if normals and len(pcd.points) >= 3:
        search = (
            o3d.geometry.KDTreeSearchParamKNN(int(normal_max_nn))
            if normal_radius is None
            else o3d.geometry.KDTreeSearchParamHybrid(radius=float(normal_radius), max_nn=int(normal_max_nn))
        )
        pcd.estimate_normals(search)
        pcd.orient_normals_towards_camera_location(np.zeros(3))

    def back(v) -> Tensor:
        return torch.as_tensor(np.asarray(v), dtype=points.dtype, device=points.device)

    return (
        back(pcd.points).reshape(-1, 3),
        back(pcd.colors) if colours is not None else None,
        back(pcd.normals) if pcd.has_normals() else None,
    )


def write_point_cloud_ply(
    path: str | os.PathLike,
    points: Tensor,
    colours: Tensor | None = None,
    normals: Tensor | None = None,
    axes: str = "gltf",
) -> None:
    """Binary little-endian PLY with float32 x y z, optional float32 nx ny nz and uchar red green blue.

    Args:
        points: [N, 3] (OpenCV axes); colours: optional [N, 3] in [0, 1]; normals: optional [N, 3].
        axes: frame of the file ("gltf": Y up, default; "blender_z_up"; "opencv"), see axes.py.
    """
    pts = to_axes(points.detach().cpu().numpy().astype(np.float64), axes).astype(np.float32)
    if len(pts) == 0:
        raise ValueError(f"{path}: refusing to write an empty point cloud")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: point cloud has non-finite coordinates")
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if normals is not None:
        fields += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(pts), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = pts.T
    if normals is not None:
        vertex["nx"], vertex["ny"], vertex["nz"] = to_axes(normals.detach().cpu().numpy().astype(np.float64), axes).astype(np.float32).T
    if colours is not None:
        c = (colours.detach().cpu().float().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = c.T
    data = ply_bytes({"vertex": vertex})
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
