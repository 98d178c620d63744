"""Polyhedra whose faces become tangent images: the icosahedron (subdivided) and the cube.

The icosahedron has a vertex at each pole (world -y is up) and two rings of five vertices at latitude
+-atan(1/2); the upper ring starts at longitude 0. Level ``k`` splits every triangle into 4^k triangles
whose vertices are pushed onto the unit sphere (level 0: 20 faces, level 1: 80).

Every function returns tensors on the requested device and dtype; geometry is computed in float64 first.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .spherical import lonlat_to_direction
from .tangent import TangentCameras, face_frame_from_axis

__all__ = ["icosahedron", "subdivide", "icosphere", "cube", "polygon_fit_tan", "tangent_cameras_for_polygons"]


def icosahedron() -> tuple[Tensor, Tensor]:
    """The regular icosahedron on the unit sphere.

    Returns:
        vertices: [12, 3] float64, faces: [20, 3] long (counter-clockwise seen from outside).
    """
    lat = math.atan(0.5)
    lon_up = torch.arange(5, dtype=torch.float64) * (2 * math.pi / 5)
    lon_lo = lon_up + math.pi / 5
    top = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)
    bottom = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    upper = lonlat_to_direction(lon_up, torch.full_like(lon_up, lat))
    lower = lonlat_to_direction(lon_lo, torch.full_like(lon_lo, -lat))
    vertices = torch.cat((top, upper, lower, bottom))  # 0 | 1..5 | 6..10 | 11
    faces = []
    for i in range(5):
        j = (i + 1) % 5
        u_i, u_j, l_i, l_j = 1 + i, 1 + j, 6 + i, 6 + j
        faces += [(0, u_i, u_j), (u_i, l_i, u_j), (l_i, l_j, u_j), (11, l_j, l_i)]
    faces = torch.tensor(faces, dtype=torch.long)
    return vertices, _orient_outward(vertices, faces)


def _orient_outward(vertices: Tensor, faces: Tensor) -> Tensor:
    """Reorder each triangle so that its normal points away from the origin."""
    a, b, c = vertices[faces].unbind(1)
    normal = torch.linalg.cross(b - a, c - a, dim=-1)
    flip = (normal * (a + b + c)).sum(-1) < 0
    faces = faces.clone()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def subdivide(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Split each triangle into four at its edge midpoints, pushed onto the unit sphere.

    Args:
        vertices: [V, 3], faces: [T, 3].
    Returns:
        vertices: [V + E, 3], faces: [4 T, 3].
    """
    edges = torch.cat((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))
    edges = torch.sort(edges, dim=1).values
    unique, inverse = torch.unique(edges, dim=0, return_inverse=True)
    mid = vertices[unique].mean(1)
    mid = mid / mid.norm(dim=-1, keepdim=True)
    m = inverse.view(3, -1) + vertices.shape[0]  # midpoints of edges (01, 12, 20) per face
    a, b, c = faces.unbind(1)
    m01, m12, m20 = m
    new_faces = torch.cat(
        (
            torch.stack((a, m01, m20), 1),
            torch.stack((m01, b, m12), 1),
            torch.stack((m20, m12, c), 1),
            torch.stack((m01, m12, m20), 1),
        )
    )
    return torch.cat((vertices, mid)), new_faces


def icosphere(level: int) -> tuple[Tensor, Tensor]:
    """Icosahedron subdivided ``level`` times: 20 * 4^level triangles. Returns (vertices, faces)."""
    if level < 0:
        raise ValueError(f"icosahedron level must be >= 0, got {level}")
    vertices, faces = icosahedron()
    for _ in range(level):
        vertices, faces = subdivide(vertices, faces)
    return vertices, faces


def cube() -> tuple[Tensor, Tensor]:
    """The six cube faces as quads on the unit sphere.

    Returns:
        vertices: [8, 3] float64 (unit length), faces: [6, 4] long, in the order
        front (+z), right (+x), back (-z), left (-x), up (-y), down (+y).
    """
    corners = torch.tensor(
        [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=torch.float64
    )
    vertices = corners / math.sqrt(3.0)
    index = {tuple(c.tolist()): i for i, c in enumerate(corners)}
    axes = [(2, 1.0), (0, 1.0), (2, -1.0), (0, -1.0), (1, -1.0), (1, 1.0)]
    faces = []
    for axis, sign in axes:
        quad = [i for c, i in index.items() if c[axis] == sign]
        faces.append(quad)
    return vertices, torch.tensor(faces, dtype=torch.long)


def polygon_fit_tan(R_world_from_face: Tensor, polygon_vertices: Tensor) -> Tensor:
    """Tangent of the smallest half field of view at which each face's polygon fits in its square image.

    Args:
        R_world_from_face: [F, 3, 3].
        polygon_vertices: [F, K, 3] the polygon's corners (in front of the camera).
    Returns:
        [F] max over corners of max(|x|, |y|) / z in camera coordinates.
    """
    cam = torch.einsum("fij,fki->fkj", R_world_from_face, polygon_vertices)  # R^T v
    return (cam[..., :2].abs().amax(-1) / cam[..., 2]).amax(-1)


def tangent_cameras_for_polygons(
    vertices: Tensor,
    faces: Tensor,
    size: int,
    padding_factor: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TangentCameras:
    """One square camera per polygon, looking at its centroid, image up towards world up.

    The half field of view is ``padding_factor`` times the smallest half angle whose square image contains the
    polygon, so 1.0 covers the face exactly and larger values make neighbouring faces overlap.

    Args:
        vertices: [V, 3], faces: [F, K].
        size: image side in pixels.
        padding_factor: >= 1, and small enough that the half field of view stays below 90 degrees.
    """
    if padding_factor < 1.0:
        raise ValueError(f"padding_factor must be >= 1 so that the faces cover the sphere, got {padding_factor}")
    poly = vertices[faces]  # [F, K, 3]
    R = face_frame_from_axis(poly.mean(1))
    half = torch.atan(polygon_fit_tan(R, poly)) * padding_factor
    if bool((half >= math.pi / 2 - 1e-3).any()):
        raise ValueError(f"padding_factor {padding_factor} makes the field of view reach 180 degrees")
    return TangentCameras(R, torch.tan(half), int(size)).to(device, dtype)
