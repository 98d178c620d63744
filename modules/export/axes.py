"""The frames 3D files are written in (one ``axes`` option for every 3D file).

The project computes in OpenCV axes (x right, y down, z forward, camera at the origin). Files are written in:

* ``gltf``: ``(x, -y, -z)``: +Y up, the panorama's centre column along -Z (glTF's mandated frame; MeshLab,
  three.js and Open3D show it upright; Blender's OBJ / glTF / FBX importers convert it to Z up);
* ``blender_z_up``: ``(x, z, -y)``: +Z up, +Y the panorama's centre (Blender's own frame, upright in its PLY
  importer, which does not convert axes);
* ``opencv``: unchanged (distance.npy, points.exr and the 3DGS convention of COLMAP-trained splats).

Each is a proper rotation of the OpenCV frame, so handedness and triangle winding are kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AXES", "axes_matrix", "to_axes"]

AXES = ("opencv", "gltf", "blender_z_up")
_MATRICES = {
    "opencv": np.eye(3),
    "gltf": np.diag([1.0, -1.0, -1.0]),
    "blender_z_up": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
}


def axes_matrix(axes: str) -> np.ndarray:
    """[3, 3] rotation taking OpenCV coordinates to ``axes`` coordinates (``p_axes = M @ p_opencv``)."""
    if axes not in _MATRICES:
        raise ValueError(f"unknown axes {axes!r}; expected one of {AXES}")
    return _MATRICES[axes]


def to_axes(xyz: np.ndarray, axes: str) -> np.ndarray:
    """Points or vectors [N, 3] in OpenCV axes -> ``axes`` (same dtype)."""
    m = axes_matrix(axes)
    if axes == "opencv":
        return xyz
    return (xyz @ m.T).astype(xyz.dtype, copy=False)
