"""Pinhole camera intrinsics, EXIF focal lengths, and depth back-projection.

Conventions (as everywhere in ImmersiveDepth):

* OpenCV axes: x right, y down, z forward; ``depth`` = z, ``distance`` = Euclidean length along the ray.
* Pixel ``(u, v)`` (column, row), 0-based, has its centre at ``(u + 0.5, v + 0.5)`` in continuous image
  coordinates (the image spans [0, W] x [0, H]); its camera ray is ``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``.
  So ``cx = W / 2, cy = H / 2`` is the exact image centre, and intrinsics scale with the image:
  ``fx, cx -> fx * s, cx * s`` when the width is multiplied by s. OpenCV calibrations put pixel centres at
  integers; :func:`intrinsics_from_params` with ``opencv_pixel_centres=True`` converts them (cx + 0.5, cy + 0.5).
* Field of view: ``hfov = 2 atan(W / (2 fx))`` (edge to edge of the image).

EXIF (:func:`intrinsics_from_exif`), in this order:

1. ``FocalLengthIn35mmFilm`` (tag 0xA405): the focal length a 36 x 24 mm frame would need for the same *diagonal*
   field of view, so ``f_px = f35 * sqrt(W^2 + H^2) / sqrt(36^2 + 24^2)`` (exact for any aspect ratio or crop).
2. ``FocalLength`` (0x920A, mm) with ``FocalPlaneXResolution`` / ``FocalPlaneYResolution`` (0xA20E / 0xA20F,
   pixels per ``FocalPlaneResolutionUnit`` 0xA210: 2 = inch, 3 = cm, 4 = mm, 5 = um): ``fx = f_mm * px_per_mm``,
   rescaled by ``W / PixelXDimension`` (0xA002) when the image was resized after capture.
3. Otherwise a default horizontal field of view (60 degrees, a typical phone / kit-lens view; configurable).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "IntrinsicsError",
    "ImageNotFoundError",
    "PinholeIntrinsics",
    "DEFAULT_HFOV_DEG",
    "intrinsics_from_fov",
    "intrinsics_from_params",
    "intrinsics_from_exif",
    "pixel_rays",
    "depth_to_points",
    "points_to_pixels",
    "depth_to_distance",
    "distance_to_depth",
]

DEFAULT_HFOV_DEG = 60.0


class IntrinsicsError(UserError, ValueError):
    """Impossible intrinsics (non-positive focal length, FOV outside (0, 180)) or a map of the wrong size."""


class ImageNotFoundError(UserError, FileNotFoundError):
    """The photo whose EXIF was asked for does not exist."""


FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)

_EXIF_IFD = 0x8769
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_35MM = 0xA405
_TAG_PLANE_XRES = 0xA20E
_TAG_PLANE_YRES = 0xA20F
_TAG_PLANE_UNIT = 0xA210
_TAG_PIXEL_X_DIM = 0xA002
_TAG_PIXEL_Y_DIM = 0xA003
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Intrinsics of a ``width`` x ``height`` image (pixel-centre convention of the module docstring).

    Attributes:
        fx, fy: focal lengths in pixels. cx, cy: principal point. width, height: image size in pixels.
        source: how they were obtained (``"fov"``, ``"params"``, ``"exif_35mm"``, ``"exif_focal_plane"``,
            ``"default_fov"``), recorded in meta.json.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str = "params"

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise IntrinsicsError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.width < 1 or self.height < 1:
            raise IntrinsicsError(f"image size must be positive, got {self.width} x {self.height}")

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    def matrix(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """[3, 3] K in the pixel-centre-at-0.5 convention (subtract 0.5 from cx, cy for OpenCV's)."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], device=device, dtype=dtype
        )

    def resized(self, width: int, height: int) -> PinholeIntrinsics:
        """The same camera for the image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
            width=int(width), height=int(height),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "width": self.width, "height": self.height,
            "hfov_deg": self.hfov_deg, "vfov_deg": self.vfov_deg, "source": self.source,
        }  # fmt: skip


def intrinsics_from_fov(
    width: int, height: int, hfov_deg: float, vfov_deg: float | None = None, source: str = "fov"
) -> PinholeIntrinsics:
    """Centred intrinsics from the horizontal field of view (square pixels unless ``vfov_deg`` is given)."""
    for name, fov in (("hfov_deg", hfov_deg), ("vfov_deg", vfov_deg)):
        if fov is not None and not 0.0 < fov < 180.0:
            raise IntrinsicsError(f"{name} must be in (0, 180) degrees, got {fov}")
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    fy = fx if vfov_deg is None else (height / 2.0) / math.tan(math.radians(vfov_deg) / 2.0)
    return PinholeIntrinsics(fx, fy, width / 2.0, height / 2.0, int(width), int(height), source)


def intrinsics_from_params(
    width: int,
    height: int,
    fx: float,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    opencv_pixel_centres: bool = False,
) -> PinholeIntrinsics:
    """Intrinsics from (fx, fy, cx, cy) in pixels; missing fy = fx, missing cx/cy = image centre.

    Args:
        opencv_pixel_centres: the given cx, cy use OpenCV's convention (pixel centres at integers); they are
            shifted by +0.5 to ours.
    """
    fy = fx if fy is None else fy
    shift = 0.5 if opencv_pixel_centres else 0.0
    cx = width / 2.0 if cx is None else float(cx) + shift
    cy = height / 2.0 if cy is None else float(cy) + shift
    return PinholeIntrinsics(float(fx), float(fy), cx, cy, int(width), int(height), "params")


def _rational(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _exif_tags(image_or_path: Any) -> dict[int, Any]:
    from PIL import Image

    if isinstance(image_or_path, (str, os.PathLike)):
        if not os.path.isfile(image_or_path):
            raise ImageNotFoundError(f"image not found: {image_or_path}")
        with Image.open(image_or_path) as img:
            exif = img.getexif()
    else:
        exif = image_or_path.getexif()
    tags = dict(exif)
    tags.update(exif.get_ifd(_EXIF_IFD))
    return tags


def intrinsics_from_exif(
    image_or_path: Any, width: int | None = None, height: int | None = None, default_hfov_deg: float = DEFAULT_HFOV_DEG
) -> PinholeIntrinsics:
    """Intrinsics from a photo's EXIF focal length (see the module docstring for the rules and their order).

    Args:
        image_or_path: a path or an opened ``PIL.Image``.
        width, height: size of the image the intrinsics are for (default: the file's size).
        default_hfov_deg: horizontal FOV used when the EXIF has no usable focal length.
    Returns:
        centred intrinsics; ``source`` tells which rule was used.
    """
    from PIL import Image

    tags = _exif_tags(image_or_path)
    if width is None or height is None:
        if isinstance(image_or_path, (str, os.PathLike)):
            with Image.open(image_or_path) as img:
                width, height = img.size
        else:
            width, height = image_or_path.size
    W, H = int(width), int(height)

    f35 = _rational(tags.get(_TAG_FOCAL_35MM))
    if f35 is not None:
        f = f35 * math.hypot(W, H) / FULL_FRAME_DIAGONAL_MM
        return PinholeIntrinsics(f, f, W / 2.0, H / 2.0, W, H, "exif_35mm")

    f_mm = _rational(tags.get(_TAG_FOCAL_LENGTH))
    xres, yres = _rational(tags.get(_TAG_PLANE_XRES)), _rational(tags.get(_TAG_PLANE_YRES))
    unit_mm = _MM_PER_UNIT.get(int(tags.get(_TAG_PLANE_UNIT, 2) or 2))
    if f_mm is not None and xres is not None and unit_mm is not None:
        yres = xres if yres is None else yres
        fx, fy = f_mm * xres / unit_mm, f_mm * yres / unit_mm
        orig_w, orig_h = _rational(tags.get(_TAG_PIXEL_X_DIM)), _rational(tags.get(_TAG_PIXEL_Y_DIM))
        fx *= W / orig_w if orig_w else 1.0
        fy *= H / orig_h if orig_h else (W / orig_w if orig_w else 1.0)
        return PinholeIntrinsics(fx, fy, W / 2.0, H / 2.0, W, H, "exif_focal_plane")

    return intrinsics_from_fov(W, H, default_hfov_deg, source="default_fov")


def pixel_rays(
    intrinsics: PinholeIntrinsics,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
) -> Tensor:
    """Camera ray of every pixel centre.

    Returns:
        [H, W, 3]: ``(x, y, 1)`` with z = 1 (``normalize=False``) or unit vectors.
    """
    K = intrinsics
    u = (torch.arange(K.width, device=device, dtype=dtype) + 0.5 - K.cx) / K.fx
    v = (torch.arange(K.height, device=device, dtype=dtype) + 0.5 - K.cy) / K.fy
    x, y = u[None, :].expand(K.height, K.width), v[:, None].expand(K.height, K.width)
    rays = torch.stack((x, y, torch.ones_like(x)), dim=-1)
    return torch.nn.functional.normalize(rays, dim=-1) if normalize else rays


def _check_map(m: Tensor, intrinsics: PinholeIntrinsics, what: str) -> None:
    if tuple(m.shape[-2:]) != (intrinsics.height, intrinsics.width):
        raise IntrinsicsError(
            f"{what} of shape {tuple(m.shape)} does not match the intrinsics' image size "
            f"{intrinsics.height} x {intrinsics.width} (use intrinsics.resized)"
        )


def depth_to_points(depth: Tensor, intrinsics: PinholeIntrinsics) -> Tensor:
    """Back-project a depth map (z) to camera-frame points.

    Args:
        depth: [..., H, W] depth along +z.
    Returns:
        [..., H, W, 3] points ``depth * (x, y, 1)``; non-finite depth gives non-finite points.
    """
    _check_map(depth, intrinsics, "depth")
    return depth[..., None] * pixel_rays(intrinsics, depth.device, depth.dtype)


def points_to_pixels(points: Tensor, intrinsics: PinholeIntrinsics) -> tuple[Tensor, Tensor]:
    """Project camera-frame points.

    Args:
        points: [..., 3] with z > 0.
    Returns:
        (uv [..., 2] pixel indices in our convention, i.e. integer values at pixel centres; depth z [...]).
    """
    K = intrinsics
    z = points[..., 2]
    u = points[..., 0] / z * K.fx + K.cx - 0.5
    v = points[..., 1] / z * K.fy + K.cy - 0.5
    return torch.stack((u, v), dim=-1), z


def depth_to_distance(depth: Tensor, intrinsics: PinholeIntrinsics) -> Tensor:
    """Depth (z) [..., H, W] -> distance along each pixel's ray [..., H, W]."""
    _check_map(depth, intrinsics, "depth")
    return depth * pixel_rays(intrinsics, depth.device, depth.dtype).norm(dim=-1)


def distance_to_depth(distance: Tensor, intrinsics: PinholeIntrinsics) -> Tensor:
    """Distance along each pixel's ray [..., H, W] -> depth (z) [..., H, W]."""
    _check_map(distance, intrinsics, "distance")
    return distance / pixel_rays(intrinsics, distance.device, distance.dtype).norm(dim=-1)
