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

from .spherical import erp_directions

__all__ = ["erp_normals"]


def _pick(fwd: Tensor, bwd: Tensor, jump_fwd: Tensor, jump_bwd: Tensor) -> Tensor:
    """Per pixel the difference with the smaller distance jump (jumps are finite or +inf, never NaN: where both are
    +inf the pixel gets no normal, so which one is taken does not matter). [H, W, 3] x2, [H, W] x2 -> [H, W, 3]."""
    return torch.where((jump_fwd <= jump_bwd)[..., None], fwd, bwd)


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
    d = torch.where(valid, distance, torch.full_like(distance, float("nan")))
    P = erp_directions(H, W, distance.device, distance.dtype) * d[..., None]  # [H, W, 3]
    nan = float("nan")

    def rows(x: Tensor, dv: int) -> Tensor:  # x[v + dv], NaN beyond the poles
        out = torch.full_like(x, nan)
        if dv > 0:
            out[:-dv] = x[dv:]
        else:
            out[-dv:] = x[:dv]
        return out

    def jump(other: Tensor) -> Tensor:  # relative distance change to a neighbour; inf where it is invalid
        j = (other - d).abs_().div_(d)
        return j.nan_to_num_(nan=float("inf"), posinf=float("inf"))  # d and other are finite, positive or NaN

    j_east, j_west, j_south, j_north = jump(d.roll(-1, 1)), jump(d.roll(1, 1)), jump(rows(d, 1)), jump(rows(d, -1))
    t_u = _pick(P.roll(-1, 1) - P, P - P.roll(1, 1), j_east, j_west)
    t_v = _pick(rows(P, 1) - P, P - rows(P, -1), j_south, j_north)
    inf = float("inf")
    ok_u = torch.minimum(j_east, j_west) < inf
    ok_v = torch.minimum(j_south, j_north) < inf
    n = torch.linalg.cross(t_u, t_v, dim=-1)
    n = torch.where(((n * P).sum(-1) > 0)[..., None], -n, n)  # towards the camera
    n = n / n.norm(dim=-1, keepdim=True)
    good = valid & ok_u & ok_v & torch.isfinite(n).all(-1)
    n = torch.where(good[..., None], n, torch.full_like(n, nan))
    return n.permute(2, 0, 1)
