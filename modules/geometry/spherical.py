"""Spherical coordinates of the equirectangular (ERP) grid.

Conventions (see ARCHITECTURE.md, used everywhere in ImmersiveDepth):

* ERP pixel ``(u, v)``, 0-based, has its centre at ``x = (u + 0.5) / W``, ``y = (v + 0.5) / H``.
* Longitude ``lon = (x - 0.5) * 2 pi`` in ``[-pi, pi)``; latitude ``lat = (0.5 - y) * pi`` (up is positive).
* Axes are OpenCV style: x right, y down, z forward. The direction of ``(lon, lat)`` is
  ``(cos(lat) sin(lon), -sin(lat), cos(lat) cos(lon))``; the centre column of the panorama looks along +z.

All functions are pure: tensors in, tensors out, device and dtype taken from the inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "erp_pixel_to_lonlat",
    "lonlat_to_erp_pixel",
    "lonlat_to_direction",
    "direction_to_lonlat",
    "erp_pixel_to_direction",
    "direction_to_erp_pixel",
    "erp_lonlat_grid",
    "erp_row_latitudes",
    "erp_column_longitudes",
    "erp_directions",
    "erp_pixel_solid_angle",
]


def erp_pixel_to_lonlat(u: Tensor, v: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pixel coordinates -> (lon, lat) in radians.

    Args:
        u: [...] column coordinate (0-based; integer values are pixel centres).
        v: [...] row coordinate, same shape as ``u``.
        height, width: ERP size H, W.
    Returns:
        lon, lat: [...] each; lon in [-pi, pi) for u in [0, W), lat in (-pi/2, pi/2).
    """
    lon = ((u + 0.5) / width - 0.5) * (2.0 * math.pi)
    lat = (0.5 - (v + 0.5) / height) * math.pi
    return lon, lat


def lonlat_to_erp_pixel(lon: Tensor, lat: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(lon, lat) in radians -> continuous pixel coordinates (u, v); inverse of :func:`erp_pixel_to_lonlat`.

    Args:
        lon, lat: [...] radians.
    Returns:
        u, v: [...] with u in [-0.5, W - 0.5) for lon in [-pi, pi).
    """
    u = (lon / (2.0 * math.pi) + 0.5) * width - 0.5
    v = (0.5 - lat / math.pi) * height - 0.5
    return u, v


def lonlat_to_direction(lon: Tensor, lat: Tensor) -> Tensor:
    """(lon, lat) -> unit direction.

    Args:
        lon, lat: [...] radians.
    Returns:
        [..., 3] unit vectors (x right, y down, z forward).
    """
    cos_lat = torch.cos(lat)
    return torch.stack((cos_lat * torch.sin(lon), -torch.sin(lat), cos_lat * torch.cos(lon)), dim=-1)


def direction_to_lonlat(direction: Tensor) -> tuple[Tensor, Tensor]:
    """Direction (need not be unit length) -> (lon, lat).

    Args:
        direction: [..., 3].
    Returns:
        lon in [-pi, pi], lat in [-pi/2, pi/2], each [...].
    """
    x, y, z = direction.unbind(-1)
    lon = torch.atan2(x, z)
    lat = torch.atan2(-y, torch.sqrt(x * x + z * z))
    return lon, lat


def erp_pixel_to_direction(u: Tensor, v: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates [...] -> unit directions [..., 3]."""
    return lonlat_to_direction(*erp_pixel_to_lonlat(u, v, height, width))


def direction_to_erp_pixel(direction: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Directions [..., 3] -> continuous pixel coordinates (u, v), each [...]."""
    return lonlat_to_erp_pixel(*direction_to_lonlat(direction), height, width)


def erp_row_latitudes(
    height: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32, offset: float = 0.5
) -> Tensor:
    """Latitude of each ERP row: [H]. ``offset`` 0.5: the row centres; 1.0: the edges between row v and v + 1."""
    v = torch.arange(height, device=device, dtype=dtype)
    return (0.5 - (v + offset) / height) * math.pi


def erp_column_longitudes(
    width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Longitude of each ERP column's centre: [W] (what :func:`erp_pixel_to_lonlat` gives for u = 0 .. W - 1)."""
    u = torch.arange(width, device=device, dtype=dtype)
    return ((u + 0.5) / width - 0.5) * (2.0 * math.pi)


def erp_lonlat_grid(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Longitude and latitude of every ERP pixel centre.

    Returns:
        lon: [H, W], lat: [H, W].
    """
    v = torch.arange(height, device=device, dtype=dtype)
    u = torch.arange(width, device=device, dtype=dtype)
    lon, lat = erp_pixel_to_lonlat(u[None, :], v[:, None], height, width)
    return lon.expand(height, width), lat.expand(height, width)


def erp_directions(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    stride: int = 1,
) -> Tensor:
    """Unit ray direction of every ERP pixel centre (every ``stride``-th row and column).

    Returns:
        [H, W, 3] (``[ceil(H / stride), ceil(W / stride), 3]``: what ``[::stride, ::stride]`` of the full grid gives,
        bit for bit, without computing the rest).
    """
    # separably: the trigonometry per row and per column (the same values lonlat_to_direction gives on the full grid;
    # taken on every row and column, then subsampled, so that each value comes out of the same vectorised kernel)
    v = torch.arange(height, device=device, dtype=dtype)
    u = torch.arange(width, device=device, dtype=dtype)
    lon, lat = erp_pixel_to_lonlat(u, v, height, width)
    cos_lat, sin_lat = torch.cos(lat)[::stride, None], torch.sin(lat)[::stride, None]
    sin_lon, cos_lon = torch.sin(lon)[None, ::stride], torch.cos(lon)[None, ::stride]
    out = torch.empty(cos_lat.shape[0], sin_lon.shape[1], 3, device=device, dtype=dtype)
    torch.mul(cos_lat, sin_lon, out=out[..., 0])
    out[..., 1] = -sin_lat
    torch.mul(cos_lat, cos_lon, out=out[..., 2])
    return out


def erp_pixel_solid_angle(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Solid angle (steradians) of each ERP row's pixels; the rows sum to 4 pi over the sphere.

    Returns:
        [H, 1], broadcastable against [H, W].
    """
    v = torch.arange(height + 1, device=device, dtype=dtype)
    lat_edges = (0.5 - v / height) * math.pi
    band = torch.sin(lat_edges[:-1]) - torch.sin(lat_edges[1:])
    return (band * (2.0 * math.pi / width))[:, None]
