"""Open3D operations on :class:`~modules.export.mesh.Mesh`: quadric decimation and screened Poisson reconstruction.

Needs the ``[mesh]`` extra (open3d); the conversion copies to float64 on the CPU and back to the mesh's device and
dtype (export only, never inside the panorama pipeline).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ..extras import require
from .mesh import Mesh, vertex_normals

__all__ = ["mesh_to_open3d", "mesh_from_open3d", "decimate_mesh", "poisson_mesh"]


def mesh_to_open3d(mesh: Mesh):
    """:class:`Mesh` -> ``open3d.geometry.TriangleMesh`` (float64 on the CPU)."""
    o3d = require("open3d", "mesh decimation and Poisson reconstruction")

    o = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.detach().cpu().double().numpy()),
        o3d.utility.Vector3iVector(mesh.faces.detach().cpu().numpy().astype(np.int32)),
    )
    if mesh.colours is not None:
        o.vertex_colors = o3d.utility.Vector3dVector(mesh.colours.detach().cpu().double().numpy())
    return o


def mesh_from_open3d(o, like: Tensor) -> Mesh:
    """``open3d.geometry.TriangleMesh`` -> :class:`Mesh` with ``like``'s device and dtype."""
    v = torch.as_tensor(np.asarray(o.vertices), dtype=like.dtype, device=like.device)
    f = torch.as_tensor(np.asarray(o.triangles).astype(np.int64), device=like.device)
    c = None
    if o.has_vertex_colors():
        c = torch.as_tensor(np.asarray(o.vertex_colors), dtype=like.dtype, device=like.device).clamp(0, 1)
    return Mesh(v, f, c)


def decimate_mesh(mesh: Mesh, target_faces: int) -> Mesh:
    """Quadric edge-collapse decimation (Open3D) down to about ``target_faces`` triangles; colours kept.

    A mesh already within the budget is returned unchanged.
    """
    if int(target_faces) != target_faces or target_faces < 1:
        raise ValueError(f"target_faces must be a positive integer, got {target_faces}")
    if mesh.num_faces <= target_faces:
        return mesh
    o = mesh_to_open3d(mesh).simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    o.remove_unreferenced_vertices()
    return mesh_from_open3d(o, mesh.vertices)


def poisson_mesh(
    mesh: Mesh,
    depth: int = 9,
    density_quantile: float = 0.02,
    scale: float = 1.1,
    linear_fit: bool = False,
) -> Mesh:
    """Screened Poisson surface reconstruction (Open3D) from the mesh's vertices and camera-facing normals.

    Args:
        mesh: source mesh (its vertices, colours and area-weighted normals are the oriented point samples).
        depth: octree depth (resolution 2**depth across the bounding cube).
        density_quantile: drop output vertices whose sample density is below this quantile (0 keeps all);
            removes the membranes Poisson spans over regions without samples.
        scale, linear_fit: passed to ``create_from_point_cloud_poisson``.
    Returns:
        the reconstructed :class:`Mesh`, triangles re-wound to face the camera.
    """
    o3d = require("open3d", "Poisson reconstruction (export.dense.mesh.poisson)")

    if not 0.0 <= density_quantile < 1.0:
        raise ValueError(f"density_quantile must be in [0, 1), got {density_quantile}")
    normals = vertex_normals(mesh)
    keep = normals.norm(dim=1) > 0
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(mesh.vertices[keep].detach().cpu().double().numpy()))
    pcd.normals = o3d.utility.Vector3dVector(normals[keep].detach().cpu().double().numpy())
    if mesh.colours is not None:
        pcd.colors = o3d.utility.Vector3dVector(mesh.colours[keep].detach().cpu().double().numpy())
    o, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=int(depth), scale=float(scale), linear_fit=bool(linear_fit)
    )
    if density_quantile > 0:
        dens = np.asarray(dens)
        o.remove_vertices_by_mask(dens < np.quantile(dens, density_quantile))
    out = mesh_from_open3d(o, mesh.vertices)
    return _face_camera(out)


def _face_camera(mesh: Mesh) -> Mesh:
    """Flip triangles whose normal points away from the origin."""
    p = mesh.vertices[mesh.faces]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    away = (n * p.mean(dim=1)).sum(-1) > 0
    faces = torch.where(away[:, None], mesh.faces[:, [0, 2, 1]], mesh.faces)
    return replace(mesh, faces=faces)
