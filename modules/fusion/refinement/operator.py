"""The refinement operator  A = D^T W D + diag(fidelity),  its right-hand side  D^T W g,  the energy, and the
sphere-metric weights (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...geometry.spherical import erp_row_latitudes


# ----------------------------------------------------------------------------------------------------------------
# The operator  A = D^T W D + diag(fidelity)  and the right-hand side  D^T W g
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _System:
    """Weights of the normal equations, in the working dtype.

    wx: [H, W]; wy: [H-1, W] (the last row's edges do not exist); fidelity: [H, W]; wp: [2, W/2] or None;
    diag: [H, W] the diagonal of A (fidelity + weights of all edges at the pixel).
    """

    wx: Tensor
    wy: Tensor
    fidelity: Tensor
    wp: Tensor | None
    diag: Tensor

    @staticmethod
    def build(wx: Tensor, wy: Tensor, fidelity: Tensor, wp: Tensor | None) -> "_System":
        diag = fidelity + wx + torch.roll(wx, 1, dims=1)
        diag[:-1] += wy
        diag[1:] += wy
        if wp is not None:
            half = wp.shape[1]
            for p, row in ((0, 0), (1, -1)):
                diag[row, :half] += wp[p]
                diag[row, half:] += wp[p]
        return _System(wx, wy, fidelity, wp, diag)


def _divergence(fx: Tensor, fy: Tensor, fp: Tensor | None) -> Tensor:
    """D^T applied to edge values: each edge (i -> j) with value f adds -f to node i and +f to node j.

    Args:
        fx: [H, W] values on x-edges (v,u)->(v,u+1 mod W); fy: [H-1, W] on y-edges (v,u)->(v+1,u);
        fp: [2, W/2] on pole edges (r,u)->(r,u+W/2) of the top (p=0) and bottom (p=1) row, or None.
    Returns:
        [H, W].
    """
    out = torch.roll(fx, 1, dims=1) - fx
    out[:-1] -= fy
    out[1:] += fy
    if fp is not None:
        half = fp.shape[1]
        for p, row in ((0, 0), (1, -1)):
            out[row, :half] -= fp[p]
            out[row, half:] += fp[p]
    return out


def _differences(x: Tensor, with_pole: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """D x: "next minus this" across every edge. x: [H, W] -> ([H, W], [H-1, W], [2, W/2] or None)."""
    dx = torch.roll(x, -1, dims=1) - x
    dy = x[1:] - x[:-1]
    dp = None
    if with_pole:
        half = x.shape[1] // 2
        dp = torch.stack([x[0, half:] - x[0, :half], x[-1, half:] - x[-1, :half]])
    return dx, dy, dp


def _apply(s: _System, x: Tensor, out: Tensor | None = None) -> Tensor:
    """A x = diag * x - sum over neighbours of (edge weight * neighbour). x: [H, W] -> [H, W] (into ``out``)."""
    out = torch.mul(s.diag, x, out=out)
    out[:, :-1].addcmul_(s.wx[:, :-1], x[:, 1:], value=-1.0)  # right neighbours
    out[:, -1:].addcmul_(s.wx[:, -1:], x[:, :1], value=-1.0)  # ... across the seam
    out[:, 1:].addcmul_(s.wx[:, :-1], x[:, :-1], value=-1.0)  # left neighbours
    out[:, :1].addcmul_(s.wx[:, -1:], x[:, -1:], value=-1.0)  # ... across the seam
    out[:-1].addcmul_(s.wy, x[1:], value=-1.0)  # neighbours below
    out[1:].addcmul_(s.wy, x[:-1], value=-1.0)  # neighbours above
    if s.wp is not None:
        half = s.wp.shape[1]
        for p, row in ((0, 0), (1, -1)):
            out[row, :half].addcmul_(s.wp[p], x[row, half:], value=-1.0)
            out[row, half:].addcmul_(s.wp[p], x[row, :half], value=-1.0)
    return out


def apply_refinement_operator(
    x: Tensor, wx: Tensor, wy: Tensor, fidelity: Tensor, wp: Tensor | None = None
) -> Tensor:
    """The normal-equation operator ``A x = D^T W D x + fidelity * x`` (half the Hessian of the energy).

    Args:
        x, wx, wy, fidelity: [H, W] (the last row of wy is ignored); wp: [2, W/2] pole edge weights or None.
    Returns:
        [H, W].
    """
    return _apply(_System.build(wx, wy[:-1], fidelity, wp), x)


def refinement_energy(
    L: Tensor,
    L0: Tensor,
    gx: Tensor,
    gy: Tensor,
    wx: Tensor,
    wy: Tensor,
    fidelity: Tensor,
    wp: Tensor | None = None,
    gp: Tensor | None = None,
) -> Tensor:
    """The energy E(L) of the module docstring (a 0-dim tensor), for checks and diagnostics.

    Args:
        L, L0, gx, gy, wx, wy, fidelity: [H, W]; wp, gp: [2, W/2] or None.
    """
    dx, dy, dp = _differences(L, wp is not None)
    e = (wx * (dx - gx) ** 2).sum() + (wy[:-1] * (dy - gy[:-1]) ** 2).sum() + (fidelity * (L - L0) ** 2).sum()
    if wp is not None:
        e = e + (wp * (dp - (0 if gp is None else gp)) ** 2).sum()
    return e



def sphere_metric_weights(
    height: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row factors that turn pixel-grid weights into the sphere's metric (see the module docstring).

    Returns:
        mx: [H, 1] = 1 / cos(lat_v) for x-edges; my: [H, 1] = cos(lat_{v+1/2}) for y-edges (row v to v+1; the last
        entry, for the non-existent edge below the last row, is 0); mf: [H, 1] = cos(lat_v) for the fidelity.
        Equator rows have factors ~1 (an ERP pixel spans the same angle in longitude and latitude when W = 2H).
    """
    lat = erp_row_latitudes(height, device, torch.float64)
    lat_edge = erp_row_latitudes(height, device, torch.float64, offset=1.0)
    cos_lat = torch.cos(lat)
    my = torch.cos(lat_edge).clamp_min(0.0)
    my[-1] = 0.0
    return (1.0 / cos_lat)[:, None].to(dtype), my[:, None].to(dtype), cos_lat[:, None].to(dtype)
