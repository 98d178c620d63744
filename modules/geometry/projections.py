"""Tangent projections selectable from config (``projection=icosahedron|cubemap``).

Each projection is a small description that builds its :class:`TangentCameras` on a device. With ``rotations=K``
the polyhedron is used K times, the k-th copy turned by yaw ``k * yaw_step_deg`` about the vertical axis and pitch
``k * pitch_step_deg`` about the x axis, so that one copy's face borders (and its vertices, where faces meet) fall
inside another copy's faces; all K x F faces are aligned and blended together. Every face image stays upright.

``outdoor_rotations`` is how many copies (at least ``rotations``) a panorama gets when the first pass finds open sky
on at least ``outdoor_sky_fraction`` of its pixels (1: never more than ``rotations``): the pipeline then predicts the
further copies' faces and aligns all of them (:meth:`modules.pipeline.PanoramaPipeline.run`). A second copy is
better on every scene and error model of the stitching benchmark; outdoors, where one copy leaves 2-3x a room's error
(far field, sky edges), it is worth twice the network work by default; indoors that is left to ``rotations=2``.
"""

from __future__ import annotations

import math

import torch

from .polyhedra import cube, icosphere, tangent_cameras_for_polygons
from .tangent import TangentCameras

__all__ = ["TangentProjection", "IcosahedronProjection", "CubemapProjection"]


class TangentProjection:
    """Base: a set of square gnomonic faces of ``face_size`` pixels with FOV ``padding_factor`` x face fit."""

    name = "tangent"

    def __init__(
        self,
        face_size: int = 512,
        padding_factor: float = 1.7,
        rotations: int = 1,
        yaw_step_deg: float = 18.0,
        pitch_step_deg: float = 18.7,
        outdoor_rotations: int = 2,
        outdoor_sky_fraction: float = 0.02,
    ):
        if face_size < 8:
            raise ValueError(f"face_size must be at least 8 pixels, got {face_size}")
        if rotations < 1:
            raise ValueError(f"rotations must be >= 1, got {rotations}")
        if outdoor_rotations < 1:
            raise ValueError(f"outdoor_rotations must be >= 1, got {outdoor_rotations}")
        if not 0.0 <= outdoor_sky_fraction <= 1.0:
            raise ValueError(f"outdoor_sky_fraction must be in [0, 1], got {outdoor_sky_fraction}")
        self.face_size = int(face_size)
        self.padding_factor = float(padding_factor)
        self.rotations = int(rotations)
        self.yaw_step_deg = float(yaw_step_deg)
        self.pitch_step_deg = float(pitch_step_deg)
        #: copies outdoors: at least ``rotations``
        self.outdoor_rotations = max(self.rotations, int(outdoor_rotations))
        self.outdoor_sky_fraction = float(outdoor_sky_fraction)

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rotation(self, k: int) -> torch.Tensor:
        """[3, 3] float64 rotation of the k-th copy: yaw (about y) after pitch (about x)."""
        yaw, pitch = math.radians(k * self.yaw_step_deg), math.radians(k * self.pitch_step_deg)
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        R_yaw = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=torch.float64)
        R_pitch = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=torch.float64)
        return R_yaw @ R_pitch

    def cameras(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                rotations: int | None = None) -> TangentCameras:
        """All faces of the first ``rotations`` (default: :attr:`rotations`) rotated copies: F x rotations cameras,
        copy-major (their ``face_ids`` 0 .. F x rotations - 1)."""
        vertices, faces = self.polygons()
        copies = [
            tangent_cameras_for_polygons(
                vertices @ self.rotation(k).T, faces, self.face_size, self.padding_factor, dtype=torch.float64
            )
            for k in range(self.rotations if rotations is None else int(rotations))
        ]
        return TangentCameras.concat(copies).to(device, dtype)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "face_size": self.face_size,
            "padding_factor": self.padding_factor,
            "rotations": self.rotations,
            "yaw_step_deg": self.yaw_step_deg,
            "pitch_step_deg": self.pitch_step_deg,
            "outdoor_rotations": self.outdoor_rotations,
            "outdoor_sky_fraction": self.outdoor_sky_fraction,
        }


class IcosahedronProjection(TangentProjection):
    """Faces of the icosahedron subdivided ``level`` times (0: 20 faces, 1: 80 faces)."""

    name = "icosahedron"

    def __init__(self, level: int = 0, face_size: int = 512, padding_factor: float = 1.7, **rotation_kwargs):
        super().__init__(face_size, padding_factor, **rotation_kwargs)
        if level not in (0, 1, 2):
            raise ValueError(f"icosahedron level must be 0, 1 or 2, got {level}")
        self.level = int(level)

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        return icosphere(self.level)

    def describe(self) -> dict:
        return {**super().describe(), "level": self.level}


class CubemapProjection(TangentProjection):
    """The six cube faces (its own defaults: the icosahedron's padding 1.7 and rotation steps do not suit a cube;
    they were inherited before and drifted from configs/projection/cubemap.yaml)."""

    name = "cubemap"

    def __init__(self, face_size: int = 512, padding_factor: float = 1.2, rotations: int = 1,
                 yaw_step_deg: float = 45.0, pitch_step_deg: float = 20.0, outdoor_rotations: int = 2,
                 outdoor_sky_fraction: float = 0.02):
        super().__init__(face_size, padding_factor, rotations, yaw_step_deg, pitch_step_deg, outdoor_rotations,
                         outdoor_sky_fraction)

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        return cube()
