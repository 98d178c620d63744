"""Tangent projections selectable from config (``projection=icosahedron|cubemap``).

Each projection is a small description that builds its :class:`TangentCameras` on a device.
"""

from __future__ import annotations

import torch

from .polyhedra import cube, icosphere, tangent_cameras_for_polygons
from .tangent import TangentCameras

__all__ = ["TangentProjection", "IcosahedronProjection", "CubemapProjection"]


class TangentProjection:
    """Base: a set of square gnomonic faces of ``face_size`` pixels with FOV ``padding_factor`` x face fit."""

    name = "tangent"

    def __init__(self, face_size: int = 512, padding_factor: float = 1.7):
        if face_size < 8:
            raise ValueError(f"face_size must be at least 8 pixels, got {face_size}")
        self.face_size = int(face_size)
        self.padding_factor = float(padding_factor)

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def cameras(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> TangentCameras:
        vertices, faces = self.polygons()
        return tangent_cameras_for_polygons(vertices, faces, self.face_size, self.padding_factor, device, dtype)

    def describe(self) -> dict:
        return {"name": self.name, "face_size": self.face_size, "padding_factor": self.padding_factor}


class IcosahedronProjection(TangentProjection):
    """Faces of the icosahedron subdivided ``level`` times (0: 20 faces, 1: 80 faces)."""

    name = "icosahedron"

    def __init__(self, level: int = 0, face_size: int = 512, padding_factor: float = 1.7):
        super().__init__(face_size, padding_factor)
        if level not in (0, 1, 2):
            raise ValueError(f"icosahedron level must be 0, 1 or 2, got {level}")
        self.level = int(level)

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        return icosphere(self.level)

    def describe(self) -> dict:
        return {**super().describe(), "level": self.level}


class CubemapProjection(TangentProjection):
    """The six cube faces."""

    name = "cubemap"

    def polygons(self) -> tuple[torch.Tensor, torch.Tensor]:
        return cube()
