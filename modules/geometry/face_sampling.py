"""Where the tangent faces meet the ERP grid, computed lean: each face's ERP row/column bounds, the (lon, lat) of
every face pixel (separably, cached by camera values), and bilinear samples at scattered points in the points' dtype
from the gathered texels.

Pure torch; device and dtype from the inputs. Conventions: :mod:`modules.geometry.tangent` (face cameras, plane
coordinates, ``grid_sample`` with ``align_corners=False`` and ``padding_mode="border"``) and
:mod:`modules.geometry.spherical` (the ERP grid).
"""

from __future__ import annotations

import math
import torch
from torch import Tensor

from .cache import ValueCache

__all__ = ["face_bounds", "face_lonlat", "gather_bilinear", "plane_coords"]


def plane_coords(size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[S] normalised face-plane coordinates of the pixel centres, in (-1, 1) (the convention of
    :mod:`modules.geometry.tangent`)."""
    return (torch.arange(size, device=device, dtype=dtype) + 0.5) * (2.0 / size) - 1.0


def face_bounds(cameras, height: int, width: int) -> Tensor:
    """The ERP rows and columns that can hold each face's pixels (conservative by a pixel or two).

    Args:
        cameras: a :class:`~modules.geometry.tangent.TangentCameras` (not imported here: tangent imports this module).

    Returns:
        [F, 4] int64 on the CPU: (v0, v1, u0, u1) per face, rows ``v0:v1`` and columns ``u0:u1`` taken modulo W
        (``u0`` may be negative and ``u1`` above W; ``(0, W)`` when the face holds a pole or spans every column).
    """
    R = cameras.R_world_from_face
    t = cameras.tan_half_fov
    # rows that can hold the face: the square image lies inside the cone reaching its corners
    axis_lat = torch.asin((-R[:, 1, 2]).clamp(-1, 1))
    corner = torch.atan(math.sqrt(2.0) * t)
    top = ((0.5 - (axis_lat + corner).clamp(max=math.pi / 2) / math.pi) * height - 1).floor().clamp(min=0)
    bottom = ((0.5 - (axis_lat - corner).clamp(min=-math.pi / 2) / math.pi) * height + 1).ceil().clamp(max=height)
    # and the columns: within the cap of angular radius `corner` around the axis, |lon - lon0| <= asin(sin(corner) /
    # cos(lat0)) unless the cap holds a pole (then every column)
    axis_lon = torch.atan2(R[:, 0, 2], R[:, 2, 2])
    ratio = torch.sin(corner) / torch.cos(axis_lat).clamp_min(1e-12)
    half_width = torch.where(ratio < 1, torch.asin(ratio.clamp(max=1.0)), torch.full_like(ratio, math.pi))
    left = ((axis_lon - half_width) / (2 * math.pi) * width + 0.5 * width - 0.5).floor() - 1
    right = ((axis_lon + half_width) / (2 * math.pi) * width + 0.5 * width - 0.5).ceil() + 2
    bounds = torch.stack((top, bottom, left, right), 1).to("cpu", torch.float64).round().long()  # one host read
    full = (bounds[:, 3] - bounds[:, 2]) >= width
    bounds[full, 2], bounds[full, 3] = 0, width
    return bounds


#: (lon, lat) of every face pixel per camera set (by value): the projection and the sky's ERP -> face masks reuse it
_LONLAT = ValueCache(max_entries=4)


def face_lonlat(cameras) -> Tensor:
    """Longitude and latitude of every face pixel centre's ray (cached by the cameras' values).

    Args:
        cameras: a :class:`~modules.geometry.tangent.TangentCameras`.

    The world ray of plane point (xn, yn) is ``R (xn t, yn t, 1)``, i.e. per world axis a column term plus a row
    term, so it is built by one broadcast addition (no normalisation: atan2 needs none).

    Returns:
        [F, S, S, 2] (lon, lat) in radians, indexed [face, row, column].
    """
    return _LONLAT.get(("face_lonlat", *cameras.cache_key()), lambda: _face_lonlat(cameras))


def _face_lonlat(cameras) -> Tensor:
    R = cameras.R_world_from_face  # [F, 3, 3]
    s = plane_coords(cameras.size, R.device, R.dtype)
    a = s[None, :] * cameras.tan_half_fov[:, None]  # [F, S] plane coordinate x tan
    col = R[:, None, :, 0] * a[:, :, None]  # [F, S, 3] world contribution of the column
    row = R[:, None, :, 1] * a[:, :, None] + R[:, None, :, 2]  # [F, S, 3] of the row, plus the axis
    x = row[:, :, None, 0] + col[:, None, :, 0]  # [F, S, S]
    y = row[:, :, None, 1] + col[:, None, :, 1]
    z = row[:, :, None, 2] + col[:, None, :, 2]
    lon = torch.atan2(x, z)
    # the rest in place (each fresh [F, S, S] temporary costs page faults on the CPU); atan2 keeps contiguous
    # outputs: into a strided one it takes a scalar path that rounds differently
    lat = torch.atan2(y.neg_(), x.mul_(x).add_(z.mul_(z)).sqrt_())
    return torch.stack((lon, lat), -1)




def gather_bilinear(face_maps: Tensor, face_index: Tensor, face_xy: Tensor) -> Tensor:
    """What :func:`~modules.geometry.tangent.sample_faces` gives for ``face_maps`` converted to ``face_xy``'s dtype (bilinear, edge pixels
    replicated, align_corners=False), computed from the 4 texels of each point: the maps are never converted
    whole (e.g. float32 faces sampled in float64 at a few thousand points).

    Args:
        face_maps: [F, C, S, S] (any float dtype).
        face_index: [N] face of each point; face_xy: [N, 2] plane coordinates (xn, yn).
    Returns:
        [N, C] in ``face_xy``'s dtype.
    """
    Fn, C, S, S2 = face_maps.shape
    if S != S2:
        raise ValueError(f"face maps must be square, got {tuple(face_maps.shape)}")
    dt = face_xy.dtype
    ix = (((face_xy[:, 0] + 1) * S - 1) / 2).clamp(0, S - 1)  # grid_sample's unnormalise + border clip
    iy = (((face_xy[:, 1] + 1) * S - 1) / 2).clamp(0, S - 1)
    x0, y0 = ix.floor(), iy.floor()
    wx, wy = ix - x0, iy - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=S - 1), (y0 + 1).clamp(max=S - 1)
    flat = face_maps.reshape(-1)
    base = face_index[:, None] * (C * S * S) + torch.arange(C, device=face_index.device)[None, :] * (S * S)  # [N, C]

    def at(y: Tensor, x: Tensor) -> Tensor:
        return flat[base + (y * S + x)[:, None]].to(dt)

    wx, wy = wx[:, None], wy[:, None]
    return ((1 - wx) * (1 - wy)) * at(y0, x0) + (wx * (1 - wy)) * at(y0, x1) + ((1 - wx) * wy) * at(y1, x0) + (
        wx * wy) * at(y1, x1)
