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
    a = disparity.abs()
    ok = a < float("inf")  # finite: NaN and +-inf fail (isfinite's own passes, without them)
    if valid is not None:
        ok &= valid
    level = _quantile_rows(a.reshape(Fn, -1), ok.reshape(Fn, -1), 0.95)
    return torch.where(torch.isfinite(level) & (level > 0), level, torch.ones_like(level))


def _quantile_rows(a: Tensor, ok: Tensor, q: float) -> Tensor:
    """Per row of a [F, N], the q-quantile of its ``ok`` entries with linear interpolation: ``torch.nanquantile``'s
    value (NaN for a row without entries), found with one partial ``topk`` of the upper tail instead of a full sort.
    """
    Fn, N = a.shape
    n = ok.sum(1)  # [F] entries per row
    pos = q * (n - 1).clamp_min(0).to(a.dtype)  # in a's dtype, as torch.quantile computes it
    lo = pos.floor()
    frac = pos - lo
    from_top = (n - 1 - lo.long()).clamp_min(0)  # rank of the lower neighbour counted from the largest (0-based)
    K = int(from_top.max()) + 1 if N else 0
    if K == 0:
        return torch.full((Fn,), float("nan"), dtype=a.dtype, device=a.device)
    x = torch.where(ok, a, torch.full_like(a, float("-inf")))
    top = torch.topk(x, K, dim=1, largest=True, sorted=True).values  # [F, K] descending
    below = top.gather(1, from_top[:, None])[:, 0]
    above = top.gather(1, (from_top - 1).clamp_min(0)[:, None])[:, 0]
    out = torch.lerp(below, above, frac)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


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
