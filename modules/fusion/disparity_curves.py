"""Per-face disparity-to-inverse-distance maps that may be non-affine: a low-order polynomial in normalised disparity.

Face f's map is

    inverse distance = cos(theta) * sum_k c_fk * phi_k(x),   x = d / level_f,   phi_k(x) = x ** k  (k = 0 .. degree)

with ``level_f`` the face's robust disparity level (its 95th percentile of |d|), so that x is about [0, 1] on every
face and the coefficients of all faces are comparable. Degree 1 is the affine map (shift c_f0 / level-free, scale
c_f1 / level_f). The map is linear in its coefficients, so a joint least-squares solve stays closed form.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["face_levels", "curve_basis", "curve_slope", "affine_coefficients"]


def face_levels(disparity: Tensor, valid: Tensor | None = None) -> Tensor:
    """Robust disparity level of each face: the 95th percentile of |d| over its finite (and ``valid``) pixels.

    Args:
        disparity: [F, S, S]; valid: [F, S, S] bool or None.
    Returns:
        [F] positive (1 where a face has no usable pixel or a level of 0), dtype and device of ``disparity``.
    """
    Fn = disparity.shape[0]
    ok = torch.isfinite(disparity) if valid is None else valid & torch.isfinite(disparity)
    a = torch.where(ok, disparity.abs(), torch.full_like(disparity, float("nan"))).reshape(Fn, -1)
    level = torch.nanquantile(a, 0.95, dim=1)
    return torch.where(torch.isfinite(level) & (level > 0), level, torch.ones_like(level))


def curve_basis(x: Tensor, degree: int) -> Tensor:
    """[..., degree + 1] powers x^0 .. x^degree of normalised disparity x [...]."""
    return torch.stack([x**k for k in range(degree + 1)], -1)


def curve_slope(coef: Tensor, x: Tensor) -> Tensor:
    """d(map)/dx of the curves ``coef`` [F, K] at points x [F, N] -> [F, N]."""
    K = coef.shape[1]
    out = torch.zeros_like(x)
    for k in range(1, K):
        out = out + k * coef[:, k:k + 1] * x ** (k - 1)
    return out


def affine_coefficients(scale: Tensor, shift: Tensor, level: Tensor, degree: int) -> Tensor:
    """Coefficients [F, degree + 1] of the affine map ``scale * d + shift`` in the normalised basis."""
    coef = torch.zeros(scale.shape[0], degree + 1, dtype=scale.dtype, device=scale.device)
    coef[:, 0] = shift
    coef[:, 1] = scale * level.to(scale)
    return coef
