"""Surface normals of an equirectangular distance map, computed on the sphere.

Conventions (ARCHITECTURE.md): OpenCV axes, camera at the origin, ERP pixel centres at ((u + 0.5) / W,
(v + 0.5) / H). Each pixel's point is ``P = d * r(lon, lat)``. Its two tangents are finite differences of P to the
neighbouring pixels along the row (longitude, wrapping around the +-180 deg seam) and along the column (latitude);
of the forward and backward difference the one whose distance changes less (relative) is used, so a pixel next to
a depth edge takes its tangent from its own surface, not across the edge. The normal is their cross product,
normalised and turned towards the camera.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .spherical import erp_pixel_to_lonlat

__all__ = ["erp_normals"]


def _forward_differences(x: Tensor, dim: int, wrap: bool) -> Tensor:
    """x[i + 1] - x[i] along ``dim`` (-1: the row, wrapping around when ``wrap``; -2: the column, NaN after the
    last row). Any shape with the ERP grid last; same shape out."""
    n = x.shape[dim]
    out = torch.empty_like(x)
    torch.sub(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), out=out.narrow(dim, 0, n - 1))
    last = out.narrow(dim, n - 1, 1)
    if wrap:
        torch.sub(x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1), out=last)
    else:
        last.fill_(float("nan"))
    return out


def _previous(x: Tensor, dim: int, wrap: bool, fill: float) -> Tensor:
    """x[i - 1] along ``dim`` (wrapping, or ``fill`` before the first)."""
    first = x.narrow(dim, x.shape[dim] - 1, 1) if wrap else torch.full_like(x.narrow(dim, 0, 1), fill)
    return torch.cat((first, x.narrow(dim, 0, x.shape[dim] - 1)), dim)


def _tangent(forward: Tensor, jump_fwd: Tensor, jump_bwd: Tensor, dim: int, wrap: bool) -> Tensor:
    """Per pixel the forward difference [3, H, W] or the backward one (the previous pixel's forward difference), the
    one with the smaller distance jump [H, W] (jumps are finite or +inf, never NaN; where both are +inf the pixel
    gets no normal, so which one is taken does not matter)."""
    return torch.where(jump_fwd <= jump_bwd, forward, _previous(forward, dim, wrap, float("nan")))


def erp_normals(distance: Tensor) -> Tensor:
    """Unit surface normals of an ERP distance map.

    Args:
        distance: [H, W] distance along each pixel's ray; NaN / inf / <= 0 are invalid; a pixel without a valid
            neighbour along its row or its column gets no normal.
    Returns:
        [3, H, W] normals (OpenCV axes, facing the camera), NaN where undefined; ``distance``'s device and dtype.
    """
    if distance.ndim != 2:
        raise ValueError(f"distance must be [H, W], got {tuple(distance.shape)}")
    H, W = distance.shape
    valid = torch.isfinite(distance) & (distance > 0)
    d = distance.masked_fill(~valid, float("nan"))
    # the points on channel planes [3, H, W] (every step below is a plane-wise operation), directions separably
    lon, lat = erp_pixel_to_lonlat(torch.arange(W, device=d.device, dtype=d.dtype),
                                   torch.arange(H, device=d.device, dtype=d.dtype), H, W)
    cos_lat = torch.cos(lat)[:, None]
    P = torch.empty(3, H, W, device=d.device, dtype=d.dtype)
    torch.mul(cos_lat * torch.sin(lon)[None, :], d, out=P[0])
    torch.mul(-torch.sin(lat)[:, None], d, out=P[1])
    torch.mul(cos_lat * torch.cos(lon)[None, :], d, out=P[2])
    # distance jumps to the next pixel (+inf where either is invalid); the previous pixel's is the backward jump.
    # Compared at the same pixel, |d' - d| orders the neighbours as the relative change |d' - d| / d does.
    inf = float("inf")
    jump_e = _forward_differences(d, -1, True).abs_().nan_to_num_(nan=inf)
    jump_s = _forward_differences(d, -2, False).abs_().nan_to_num_(nan=inf)
    jump_w, jump_n = _previous(jump_e, -1, True, inf), _previous(jump_s, -2, False, inf)
    t_u = _tangent(_forward_differences(P, -1, True), jump_e, jump_w, -1, True)
    t_v = _tangent(_forward_differences(P, -2, False), jump_s, jump_n, -2, False)
    n = torch.empty_like(P)  # t_u x t_v
    torch.sub(t_u[1] * t_v[2], t_u[2] * t_v[1], out=n[0])
    torch.sub(t_u[2] * t_v[0], t_u[0] * t_v[2], out=n[1])
    torch.sub(t_u[0] * t_v[1], t_u[1] * t_v[0], out=n[2])
    # towards the camera, unit length
    sign = torch.where((n * P).sum(0) > 0, -1.0, 1.0).to(d.dtype)
    n.mul_(sign / n.square().sum(0).sqrt_())
    good = valid & (torch.minimum(jump_e, jump_w) < inf) & (torch.minimum(jump_s, jump_n) < inf)
    good &= torch.isfinite(n).all(0)
    return n.masked_fill_(~good, float("nan"))  # in place: no [3, H, W] temporaries
