"""Point clouds from an ERP distance map: one coloured point per (subsampled) valid pixel, written as PLY."""

from __future__ import annotations

import os

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from ..geometry.spherical import erp_directions
from .atomic import atomic_path

__all__ = ["erp_points", "write_point_cloud_ply"]


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
    dirs = erp_directions(H, W, distance.device, distance.dtype)[::stride, ::stride]
    d = distance[::stride, ::stride]
    valid = torch.isfinite(d) & (d > 0)
    points = dirs[valid] * d[valid][:, None]
    colours = None if rgb is None else rgb[:, ::stride, ::stride].permute(1, 2, 0)[valid]
    return points, colours


def write_point_cloud_ply(path: str | os.PathLike, points: Tensor, colours: Tensor | None = None) -> None:
    """Binary little-endian PLY with float32 x y z and, when given, uchar red green blue (colours in [0, 1])."""
    pts = points.detach().cpu().numpy().astype(np.float32)
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(pts), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = pts.T
    if colours is not None:
        c = (colours.detach().cpu().float().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = c.T
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(tmp))
