"""Gradient-domain (screened Poisson) refinement of the ERP log-distance.

Given a blended ERP log-distance ``L0`` and target differences between neighbouring ERP pixels (each face's own
log-distance differences, blended), find the log-distance ``L`` that minimises

    E(L) =  sum_{v,u}       wx[v,u] * (L[v, (u+1) % W] - L[v,u] - gx[v,u])^2        (x-edges, longitude wraps)
          + sum_{v<H-1, u}  wy[v,u] * (L[v+1, u]       - L[v,u] - gy[v,u])^2        (y-edges; last row ignored)
          + sum_{p, u<W/2}  wp[p,u] * (L[r_p, u + W/2] - L[r_p, u] - gp[p,u])^2     (optional pole edges)
          + sum_{v,u}       fidelity[v,u] * (L[v,u] - L0[v,u])^2

Conventions (ARCHITECTURE.md): ERP pixel ``(u, v)`` has its centre at ``((u + 0.5) / W, (v + 0.5) / H)``; row 0 is
the top (latitude +pi/2 side), column ``W - 1`` is the western neighbour of column 0 (the grid wraps in longitude, so
the edge ``(v, W-1) -> (v, 0)`` is an ordinary x-edge with target ``gx[v, W-1]``). Differences are "next minus
this": ``gx[v,u]`` is the target for ``L[v,u+1] - L[v,u]``, ``gy[v,u]`` for ``L[v+1,u] - L[v,u]``.

Poles. Pixels of the first and last row crowd around the poles. Two ways to couple them are offered:

* ``sphere_metric`` (the default of :class:`GradientRefinement`): the pixel-grid energy is the discretisation of
  ``integral |grad_S L - g|^2 dA`` on the sphere, i.e. x-edges weigh ``1 / cos(lat)``, y-edges ``cos(lat)`` of the
  edge's mid latitude, fidelity ``cos(lat)`` (the pixel's area). The short x-edges near a pole then become stiff, each
  polar row behaves like a small ring around the pole and the map is continuous through it; an edge *across* the
  pole (mid latitude +-90 degrees) has weight ``cos(90) = 0`` in this metric, so no pole edges are added.
* pole edges (``wp``): each pixel ``(r, u)`` of the first / last row ``r`` is joined to ``(r, u + W/2)``, the pixel
  diametrically across the pole, with target difference ``gp`` (0 unless the caller supplies it). Useful with the
  plain pixel metric, where nothing else ties the two halves of a polar row together. Needs an even ``W``.

Well-posedness. The normal equations ``A L = b`` have ``A`` = weighted graph Laplacian + ``diag(fidelity)``, which is
positive definite when every connected part of the edge graph (edges of weight > 0) holds a pixel with
fidelity > 0. All-zero fidelity is refused (the solution would only be defined up to a constant). A part cut off by
zero-weight edges that has no fidelity at all is defined only up to its own constant; the solver returns one
solution (in practice close to ``L0`` there).

Solver. Preconditioned conjugate gradients on the correction ``L - L0`` (so float32 keeps its digits for the small
correction). The preconditioner is the same operator with every weight replaced by its row mean: a screened
Poisson operator whose coefficients depend on the latitude row only, which the FFT along longitude (periodic)
diagonalises into one tridiagonal system in latitude per longitudinal frequency; those are solved exactly by
cyclic reduction, batched over frequencies (factorised once per call). This captures the latitude-dependent
anisotropy of the sphere metric exactly; spatial weight variations within a row (confidence, cut edges) are what
the conjugate-gradient iterations handle. Cost per iteration: one stencil product, one rfft/irfft pair and the
cyclic-reduction sweeps; memory is a few dozen [H, W] arrays (4096x2048 float32 stays well under 2 GB).

All functions are pure tensor functions: device and dtype come from ``L0`` (float16/bfloat16 are computed in
float32 and returned in the input dtype).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as csgraph_components
from torch import Tensor

from ..errors import UserError

__all__ = [
    "RefinementConfigError",
    "RefinementResult",
    "GradientRefinement",
    "NoRefinement",
    "refine_log_distance",
    "solve_refinement",
    "sphere_metric_weights",
    "refinement_energy",
    "apply_refinement_operator",
    "connected_components",
]


class RefinementConfigError(UserError, ValueError):
    """An impossible refinement setting (fidelity weight, tolerance, iteration count)."""


@dataclass
class RefinementResult:
    """Output of :func:`solve_refinement`.

    Attributes:
        log_distance: [H, W] refined log-distance, dtype of the input ``L0``.
        iterations: conjugate-gradient iterations run.
        relative_residual: ||b - A L|| / ||b - A L_start||, the normal-equation residual relative to that of the
            starting point (L0 unless x0 was given; 0 if the start already solves the problem).
        converged: whether ``relative_residual <= tol`` was reached within ``max_iterations``.
    """

    log_distance: Tensor
    iterations: int
    relative_residual: float
    converged: bool


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------


def _check_shapes(maps: dict[str, Tensor], pole: dict[str, Tensor | None]) -> None:
    """Types, shapes and devices of the inputs; raises ValueError naming the argument."""
    L0 = maps["L0"]
    if not isinstance(L0, Tensor) or L0.dim() != 2:
        raise ValueError(f"refinement: L0 must be an [H, W] tensor, got {getattr(L0, 'shape', type(L0).__name__)}")
    H, W = L0.shape
    if H < 1 or W < 2:
        raise ValueError(f"refinement: the ERP grid must be at least 1x2, got {H}x{W}")
    if not L0.is_floating_point():
        raise ValueError(f"refinement: L0 must be a floating-point tensor, got {L0.dtype}")
    for name, t in maps.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"refinement: {name} must be a tensor, got {type(t).__name__}")
        if t.shape != L0.shape:
            raise ValueError(f"refinement: {name} has shape {tuple(t.shape)}, expected {tuple(L0.shape)} like L0")
        if t.device != L0.device:
            raise ValueError(f"refinement: {name} is on {t.device}, L0 on {L0.device}")
    wp, gp = pole["wp"], pole["gp"]
    if wp is None:
        if gp is not None:
            raise ValueError("refinement: gp (pole targets) given without wp (pole edge weights)")
        return
    if W % 2:
        raise ValueError(f"refinement: pole edges need an even ERP width, got W={W}")
    for name, t in (("wp", wp), ("gp", gp)):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.shape != (2, W // 2):
            raise ValueError(f"refinement: {name} must be [2, W/2] = [2, {W // 2}], got {getattr(t, 'shape', t)}")
        if t.device != L0.device:
            raise ValueError(f"refinement: {name} is on {t.device}, L0 on {L0.device}")


def _check_weights(weights: dict[str, Tensor | None]) -> bool:
    """Weights must be >= 0 and fidelity positive somewhere. Returns whether any edge weight is exactly 0 (a cut).

    Args:
        weights: "wx" [H, W], "wy" [H-1, W], "fidelity" [H, W], "wp" [2, W/2] or None (NaN is caught later).
    """
    has_cut = False
    for name, w in weights.items():
        if w is None or w.numel() == 0:
            continue
        lo, hi = torch.aminmax(w)
        lo, hi = float(lo), float(hi)
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"refinement: {name} has non-finite values (NaN)")
        if lo < 0:
            raise ValueError(f"refinement: {name} has negative weights (min {lo:g}); weights must be >= 0")
        if name == "fidelity":
            if not hi > 0:
                raise ValueError(
                    "refinement: fidelity is zero everywhere; the log-distance would be defined only up to a "
                    "constant. Give a positive fidelity weight to at least one pixel."
                )
        elif lo == 0:
            has_cut = True
    return has_cut


def _raise_nonfinite(maps: dict[str, Tensor | None]) -> None:
    """Names the first input with NaN or inf values (called only once something is known to be non-finite)."""
    for name, t in maps.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"refinement: {name} has non-finite values (NaN or inf)")
    raise ValueError("refinement: the inputs overflow the working precision (non-finite normal equations)")


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


# ----------------------------------------------------------------------------------------------------------------
# Preconditioner: row-mean coefficients, FFT in longitude, cyclic reduction in latitude
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _CRLevel:
    """One cyclic-reduction level of a batch of tridiagonal systems of length n; coefficients [rows, K, 2]."""

    alpha: Tensor  # [n_odd, K, 2]   multiplier of the left (even) neighbour's equation
    gamma: Tensor  # [n_right, K, 2] multiplier of the right (even) neighbour's equation
    a_even: Tensor  # [n_even, K, 2] a / b of the even equations
    c_even: Tensor  # [n_even, K, 2] c / b of the even equations
    inv_b_even: Tensor  # [n_even, K, 2]


class _CyclicReduction:
    """Exact batched solver of tridiagonal systems  a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i  along dim 0.

    Factorised once (in float64) from real coefficients a, b, c: [n, K] (a[0] and c[n-1] unused); ``solve_`` takes
    d: [n, K, 2] (real and imaginary part of K complex right-hand sides) in the working dtype. Each level eliminates
    the even-indexed unknowns from the odd-indexed equations: log2(n) levels, each a few vectorised operations over
    all K systems. Coefficients are stored expanded to [.., K, 2] (broadcasting over the last dim is much slower).
    """

    def __init__(self, a: Tensor, b: Tensor, c: Tensor, dtype: torch.dtype):
        self.levels: list[_CRLevel] = []
        a, c = a.clone(), c.clone()
        a[0] = 0
        c[-1] = 0

        def store(t: Tensor) -> Tensor:
            return t.to(dtype)[..., None].expand(*t.shape, 2).contiguous()

        while b.shape[0] > 1:
            n = b.shape[0]
            n_odd, n_even = n // 2, (n + 1) // 2
            n_right = min(n_odd, n_even - 1)  # odd t has a right even neighbour t+1 only if t+1 < n_even
            ae, be, ce = a[0::2], b[0::2], c[0::2]
            ao, bo, co = a[1::2], b[1::2], c[1::2]
            alpha = -ao / be[:n_odd]
            gamma = -co[:n_right] / be[1 : n_right + 1]
            new_a = alpha * ae[:n_odd]
            new_b = bo + alpha * ce[:n_odd]
            new_b[:n_right] += gamma * ae[1 : n_right + 1]
            new_c = torch.zeros_like(new_b)
            new_c[:n_right] = gamma * ce[1 : n_right + 1]
            self.levels.append(
                _CRLevel(store(alpha), store(gamma), store(ae / be), store(ce / be), store(1.0 / be))
            )
            a, b, c = new_a, new_b, new_c
        self.inv_b_last = store(1.0 / b)

    def solve_(self, d: Tensor) -> Tensor:
        """Solves in place: d: [n, K, 2] right-hand sides -> the solutions, in the same storage.

        Level l works on the strided view of rows (2^l - 1) :: 2^l; the forward sweep overwrites the odd rows of each
        level with their reduced right-hand sides, the backward sweep the even rows with their solutions.
        """
        views = []
        cur = d
        for lev in self.levels:
            views.append(cur)
            even, odd = cur[0::2], cur[1::2]
            n_odd, n_right = lev.alpha.shape[0], lev.gamma.shape[0]
            odd.addcmul_(lev.alpha, even[:n_odd])
            odd[:n_right].addcmul_(lev.gamma, even[1 : n_right + 1])
            cur = odd
        cur.mul_(self.inv_b_last)
        for lev, cur in zip(reversed(self.levels), reversed(views)):
            even, odd = cur[0::2], cur[1::2]
            n_even, n_odd = even.shape[0], odd.shape[0]
            even.mul_(lev.inv_b_even)
            even[1:].addcmul_(lev.a_even[1:], odd[: n_even - 1], value=-1.0)
            n_r = min(n_odd, n_even)
            even[:n_r].addcmul_(lev.c_even[:n_r], odd[:n_r], value=-1.0)
        return d


class _RowMeanPreconditioner:
    """M^-1 for M = the operator with every weight replaced by its row mean (exact inverse via FFT + cyclic reduction).

    Args:
        system: the weights (the grid width W is the longitudinal period).
        floor: row-mean fidelity given to rows without any, relative to the mean fidelity (keeps M positive
            definite; rows with fidelity keep theirs, so M is exact for row-constant weights).
    """

    def __init__(self, system: _System, floor: float = 1e-6):
        H, W = system.fidelity.shape
        f64 = torch.float64
        dev = system.fidelity.device
        cx = system.wx.to(f64).mean(dim=1)  # [H]
        cy = system.wy.to(f64).mean(dim=1)  # [H-1]
        cf = system.fidelity.to(f64).mean(dim=1)
        cf = torch.where(cf > 0, cf, floor * cf.mean())  # rows without fidelity: keep M positive definite
        K = W // 2 + 1
        k = torch.arange(K, device=dev, dtype=f64)
        lam = 2.0 - 2.0 * torch.cos(2.0 * math.pi * k / W)  # eigenvalues of the periodic 1D Laplacian
        up = torch.zeros(H, device=dev, dtype=f64)  # weight of the edge to the row above
        down = torch.zeros(H, device=dev, dtype=f64)  # ... and below
        up[1:] = cy
        down[:-1] = cy
        b = cf[:, None] + cx[:, None] * lam[None, :] + (up + down)[:, None]
        if system.wp is not None:
            odd = (torch.arange(K, device=dev) % 2 == 1).to(f64)  # shift by W/2 is (-1)^k in Fourier space
            b[0] += 2.0 * system.wp[0].to(f64).mean() * odd
            b[-1] += 2.0 * system.wp[1].to(f64).mean() * odd
        a = (-up)[:, None].expand(H, K)
        c = (-down)[:, None].expand(H, K)
        self.width = W
        self.cr = _CyclicReduction(a, b, c, system.fidelity.dtype)
        self._spec: Tensor | None = None

    def __call__(self, r: Tensor, out: Tensor | None = None) -> Tensor:
        """r: [H, W] -> M^-1 r: [H, W] (written into ``out`` if given)."""
        if self._spec is None:
            self._spec = torch.fft.rfft(r, dim=1)  # [H, K] complex, reused by later calls
        else:
            torch.fft.rfft(r, dim=1, out=self._spec)
        self.cr.solve_(torch.view_as_real(self._spec))
        if out is None:
            return torch.fft.irfft(self._spec, n=self.width, dim=1)
        return torch.fft.irfft(self._spec, n=self.width, dim=1, out=out)


# ----------------------------------------------------------------------------------------------------------------
# Parts cut off by zero-weight edges, and their deflation
# ----------------------------------------------------------------------------------------------------------------


def connected_components(wx: Tensor, wy: Tensor, wp: Tensor | None = None) -> Tensor:
    """Connected parts of the ERP edge graph (edges of weight > 0, longitude wrapping, optional pole edges).

    Labelled with ``scipy.ndimage.label`` on a doubled grid (pixels at even positions, edges between them), then
    the parts joined by the seam (column W-1 to 0) and pole edges are merged.

    Args:
        wx, wy: [H, W] edge weights as in :func:`solve_refinement` (last row of wy ignored); wp: [2, W/2] or None.
    Returns:
        [H, W] int64 labels 0 .. n-1 on the device of ``wx``.
    """
    H, W = wx.shape
    cx = (wx > 0).cpu().numpy()
    cy = (wy[:-1] > 0).cpu().numpy()
    grid = np.zeros((2 * H - 1, 2 * W), dtype=bool)
    grid[0::2, 0::2] = True
    grid[0::2, 1::2] = cx
    grid[1::2, 0::2] = cy
    lab, n = ndimage.label(grid)
    del grid
    node = lab[0::2, 0::2].astype(np.int64) - 1
    del lab
    a, b = [node[cx[:, -1], -1]], [node[cx[:, -1], 0]]  # seam edges (v, W-1) -> (v, 0)
    if wp is not None:
        half = W // 2
        cp = (wp > 0).cpu().numpy()
        for p, row in ((0, 0), (1, -1)):
            a.append(node[row, :half][cp[p]])
            b.append(node[row, half:][cp[p]])
    a, b = np.concatenate(a), np.concatenate(b)
    if np.any(a != b):
        merge = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
        _, mapping = csgraph_components(merge, directed=False)
        node = mapping.astype(np.int64)[node]
    return torch.from_numpy(node).to(wx.device)


@dataclass
class _Deflation:
    """Exact deflation of the constants of parts of the graph cut off by zero-weight edges.

    Such a part's constant offset is set by its fidelity alone; with the row-mean preconditioner, which does not see
    the cuts, conjugate gradients would find it only slowly (and the residual norm would hardly show it). For a part
    c with no edge to the rest, A 1_c = fidelity * 1_c, so with Z = [1_c] (every part but the largest, with positive
    fidelity) the coarse matrix Z^T A Z = diag(sum_c fidelity) and the deflated iteration (A-DEF2) only needs
    per-part fidelity-weighted means. Parts with no fidelity at all are defined up to a constant: their mean
    correction is set to zero (they keep the blend's mean).

    idx: [M] flat indices of the pixels of deflated parts; comp: [M] their part 0..C-1; weight: [M] their fidelity;
    inv_mass: [C] 1 / fidelity sum of each part; free_idx, free_comp: pixels and parts without fidelity;
    free_count: [C0] pixels of each part without fidelity.
    """

    idx: Tensor
    comp: Tensor
    weight: Tensor
    inv_mass: Tensor
    free_idx: Tensor
    free_comp: Tensor
    free_count: Tensor

    @staticmethod
    def build(labels: Tensor, fidelity: Tensor) -> "_Deflation | None":
        """labels: [H, W] int64 from :func:`connected_components`; fidelity: [H, W]. None if nothing to deflate."""
        flat = labels.flatten()
        n = int(flat.max()) + 1
        if n == 1:
            return None
        f = fidelity.flatten()
        count = torch.bincount(flat, minlength=n)
        mass = torch.zeros(n, dtype=torch.float64, device=f.device).index_add_(0, flat, f.to(torch.float64))
        # a part whose fidelity is negligible (e.g. denormal confidences) is treated as having none: inverting its
        # mass would overflow
        has_fidelity = mass > 1e-12 * float(mass.max()) if float(mass.max()) > 0 else torch.zeros_like(mass, dtype=torch.bool)
        deflated = has_fidelity.clone()
        deflated[int(torch.argmax(count))] = False  # the row-mean preconditioner already handles the main part
        free = ~has_fidelity

        def select(mask: Tensor) -> tuple[Tensor, Tensor]:
            remap = torch.cumsum(mask, 0) - 1
            idx = torch.nonzero(mask[flat]).flatten()
            return idx, remap[flat[idx]]

        idx, comp = select(deflated)
        free_idx, free_comp = select(free)
        return _Deflation(
            idx=idx,
            comp=comp,
            weight=f[idx],
            inv_mass=(1.0 / mass[deflated]).to(f.dtype),
            free_idx=free_idx,
            free_comp=free_comp,
            free_count=count[free].to(f.dtype),
        )

    def _part_sums(self, values: Tensor) -> Tensor:
        """values: [M] -> [C] sums per deflated part."""
        return torch.zeros_like(self.inv_mass).index_add_(0, self.comp, values)

    def coarse(self, b: Tensor) -> Tensor:
        """Q b = Z (Z^T A Z)^-1 Z^T b. b: [H, W] -> [H, W] (zero outside the deflated parts)."""
        x = torch.zeros_like(b)
        x.view(-1)[self.idx] = (self._part_sums(b.view(-1)[self.idx]) * self.inv_mass)[self.comp]
        return x

    def project_(self, y: Tensor) -> Tensor:
        """y <- (I - Q A) y in place (removes each deflated part's fidelity-weighted mean). y: [H, W]."""
        flat = y.view(-1)
        means = self._part_sums(self.weight * flat[self.idx]) * self.inv_mass
        flat.index_add_(0, self.idx, means[self.comp], alpha=-1.0)
        return y

    def fix_free_(self, x: Tensor) -> Tensor:
        """Sets the mean of x to 0 on every part without fidelity, in place. x: [H, W]."""
        if self.free_idx.numel():
            flat = x.view(-1)
            sums = torch.zeros_like(self.free_count).index_add_(0, self.free_comp, flat[self.free_idx])
            flat.index_add_(0, self.free_idx, (sums / self.free_count)[self.free_comp], alpha=-1.0)
        return x


# ----------------------------------------------------------------------------------------------------------------
# Conjugate gradients
# ----------------------------------------------------------------------------------------------------------------


def _pcg(
    system: _System,
    rhs: Tensor,
    precond: _RowMeanPreconditioner,
    deflation: _Deflation | None,
    tol: float,
    max_iterations: int,
) -> tuple[Tensor, int, float]:
    """Solve A x = rhs by (deflated) preconditioned CG from x = 0 (or the deflation's coarse solution).

    Work arrays are allocated once. rhs: [H, W], overwritten (it becomes the residual).
    Returns (x [H, W], iterations, ||rhs - A x|| / ||rhs||).
    """
    norm0 = float(torch.linalg.vector_norm(rhs))
    if norm0 == 0.0:
        return torch.zeros_like(rhs), 0, 0.0
    r = rhs
    Ap = torch.empty_like(r)
    if deflation is None:
        x = torch.zeros_like(r)
    else:
        x = deflation.coarse(r)
        r.sub_(_apply(system, x, out=Ap))
    z = torch.empty_like(r)

    def precondition() -> None:
        precond(r, out=z)
        if deflation is not None:
            deflation.project_(z)

    precondition()
    p = z.clone()
    rz = float(torch.dot(r.view(-1), z.view(-1)))
    rel = float(torch.linalg.vector_norm(r)) / norm0
    it = 0
    while it < max_iterations and rel > tol:
        _apply(system, p, out=Ap)
        pAp = float(torch.dot(p.view(-1), Ap.view(-1)))
        if not pAp > 0.0:  # p in the null space (a part without fidelity) or breakdown: nothing left to gain
            break
        alpha = rz / pAp
        x.add_(p, alpha=alpha)
        r.add_(Ap, alpha=-alpha)
        it += 1
        rel = float(torch.linalg.vector_norm(r)) / norm0
        if rel <= tol:
            break
        precondition()
        rz_new = float(torch.dot(r.view(-1), z.view(-1)))
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    if deflation is not None:
        deflation.fix_free_(x)
    return x, it, rel


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def solve_refinement(
    L0: Tensor,
    gx: Tensor,
    gy: Tensor,
    wx: Tensor,
    wy: Tensor,
    fidelity: Tensor,
    *,
    tol: float = 1e-4,
    max_iterations: int = 200,
    wp: Tensor | None = None,
    gp: Tensor | None = None,
    x0: Tensor | None = None,
) -> RefinementResult:
    """Minimise the energy of the module docstring by preconditioned conjugate gradients.

    Args:
        L0: [H, W] blended log-distance (fidelity target, and the starting point unless ``x0`` is given).
        gx: [H, W] target of L[v, u+1 mod W] - L[v, u]; gy: [H, W] target of L[v+1, u] - L[v, u] (last row ignored).
        wx, wy: [H, W] edge weights >= 0 (0 cuts the edge; last row of wy ignored).
        fidelity: [H, W] weights >= 0 of (L - L0)^2, positive somewhere.
        tol: stop when ||b - A L|| <= tol * ||b - A L_start|| (normal-equation residual).
        max_iterations: upper bound on conjugate-gradient iterations.
        wp: [2, W/2] weights of the pole edges (top row, bottom row) joining (r, u) and (r, u + W/2), or None for
            no pole edges; gp: [2, W/2] their target L[r, u + W/2] - L[r, u] (None = 0).
        x0: [H, W] starting point (default L0), e.g. a previous solution.
    Returns:
        :class:`RefinementResult` (log_distance [H, W] in the dtype of L0).
    Raises:
        ValueError: shapes differ, values are not finite, weights negative, or fidelity is zero everywhere.
    """
    maps = {"L0": L0, "gx": gx, "gy": gy, "wx": wx, "wy": wy, "fidelity": fidelity}
    if x0 is not None:
        maps["x0"] = x0
    _check_shapes(maps, {"wp": wp, "gp": gp})
    if not tol > 0 or not max_iterations >= 0:
        raise ValueError(f"refinement: need tol > 0 and max_iterations >= 0, got {tol} and {max_iterations}")
    dt = _working_dtype(L0.dtype)
    cast = lambda t: None if t is None else t.to(dt).contiguous()  # noqa: E731
    system = _System.build(cast(wx), cast(wy[:-1]), cast(fidelity), cast(wp))
    has_cut = _check_weights({"wx": system.wx, "wy": system.wy, "fidelity": system.fidelity, "wp": system.wp})
    start = cast(L0 if x0 is None else x0)
    rhs = _normal_rhs(system, start, cast(gx), cast(gy[:-1]), cast(gp))
    if x0 is not None:
        rhs.addcmul_(system.fidelity, cast(L0) - start)
    if not (bool(torch.isfinite(rhs).all()) and bool(torch.isfinite(system.diag).all())):
        _raise_nonfinite({**maps, "wp": wp, "gp": gp})
    precond = _RowMeanPreconditioner(system)
    deflation = None
    if has_cut:
        deflation = _Deflation.build(connected_components(wx, wy, wp), system.fidelity)
    delta, iterations, rel = _pcg(system, rhs, precond, deflation, float(tol), int(max_iterations))
    return RefinementResult((start + delta).to(L0.dtype), iterations, rel, rel <= tol)


def _normal_rhs(system: _System, start: Tensor, gx: Tensor, gy: Tensor, gp: Tensor | None) -> Tensor:
    """Right-hand side for the correction delta = L - start:  D^T W (g - D start)  (the fidelity part is added by
    the caller when start != L0). start, gx: [H, W]; gy: [H-1, W]; gp: [2, W/2] or None. Returns [H, W]."""
    with_pole = system.wp is not None
    dx, dy, dp = _differences(start, with_pole)
    fx = torch.sub(gx, dx, out=dx).mul_(system.wx)
    fy = torch.sub(gy, dy, out=dy).mul_(system.wy)
    fp = None
    if with_pole:
        fp = ((0 if gp is None else gp) - dp) * system.wp
    return _divergence(fx, fy, fp)


def refine_log_distance(
    L0: Tensor,
    gx: Tensor,
    gy: Tensor,
    wx: Tensor,
    wy: Tensor,
    fidelity: Tensor,
    *,
    tol: float = 1e-4,
    max_iterations: int = 200,
    wp: Tensor | None = None,
    gp: Tensor | None = None,
    x0: Tensor | None = None,
) -> Tensor:
    """Refined log-distance [H, W]; arguments as :func:`solve_refinement` (which also reports iterations)."""
    return solve_refinement(
        L0, gx, gy, wx, wy, fidelity, tol=tol, max_iterations=max_iterations, wp=wp, gp=gp, x0=x0
    ).log_distance


def sphere_metric_weights(
    height: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row factors that turn pixel-grid weights into the sphere's metric (see the module docstring).

    Returns:
        mx: [H, 1] = 1 / cos(lat_v) for x-edges; my: [H, 1] = cos(lat_{v+1/2}) for y-edges (row v to v+1; the last
        entry, for the non-existent edge below the last row, is 0); mf: [H, 1] = cos(lat_v) for the fidelity.
        Equator rows have factors ~1 (an ERP pixel spans the same angle in longitude and latitude when W = 2H).
    """
    v = torch.arange(height, device=device, dtype=torch.float64)
    lat = (0.5 - (v + 0.5) / height) * math.pi
    lat_edge = (0.5 - (v + 1.0) / height) * math.pi
    cos_lat = torch.cos(lat)
    my = torch.cos(lat_edge).clamp_min(0.0)
    my[-1] = 0.0
    return (1.0 / cos_lat)[:, None].to(dtype), my[:, None].to(dtype), cos_lat[:, None].to(dtype)


class NoRefinement:
    """Identity refinement: returns the blend unchanged (``refinement=none``)."""

    def refine(
        self,
        L0: Tensor,
        gx: Tensor,
        gy: Tensor,
        wx: Tensor,
        wy: Tensor,
        fidelity: Tensor,
        pole_gy: Tensor | None = None,
    ) -> tuple[Tensor, dict]:
        """Same arguments as :meth:`GradientRefinement.refine`; returns (L0, info) without a solve."""
        return L0, {"iterations": 0, "relative_residual": 1.0, "converged": False, "seconds": 0.0}

    def describe(self) -> dict:
        return {"name": type(self).__name__}


class GradientRefinement:
    """Gradient-domain refinement of the ERP log-distance (``refinement=gradient``).

    Args:
        fidelity_weight: lambda, the blend's weight per steradian relative to the gradients' (units 1/rad^2); it
            multiplies the caller's per-pixel fidelity map (e.g. the blend confidence) times the pixel's angular
            area (pi / H)^2, so the result does not depend on the resolution. Above about 1 / sqrt(lambda) radians
            the blend decides the shape, below it the face gradients (1.0: one radian, about the size of a face).
        tol: relative normal-equation residual at which the solve stops.
        max_iterations: upper bound on conjugate-gradient iterations.
        sphere_metric: weigh edges and fidelity by the sphere's metric (x-edges 1/cos(lat), y-edges cos(lat),
            fidelity cos(lat)), so every solid angle counts alike and the polar rows stay continuous through the pole.
        pole_weight: if > 0, add edges across the poles, (r, u) to (r, u + W/2) in the first and last row, with
            weight pole_weight x the mean y-edge weight (after the metric) of the two pixels; target difference
            ``pole_gy`` (0 unless given). Mostly useful with ``sphere_metric: false``.
    """

    def __init__(
        self,
        fidelity_weight: float = 1.0,
        tol: float = 1e-3,
        max_iterations: int = 100,
        sphere_metric: bool = True,
        pole_weight: float = 0.0,
    ):
        if not fidelity_weight > 0:
            raise RefinementConfigError(f"refinement.fidelity_weight must be > 0, got {fidelity_weight}")
        if not 0 < tol < 1:
            raise RefinementConfigError(f"refinement.tol must be in (0, 1), got {tol}")
        if int(max_iterations) < 1:
            raise RefinementConfigError(f"refinement.max_iterations must be >= 1, got {max_iterations}")
        if not pole_weight >= 0:
            raise RefinementConfigError(f"refinement.pole_weight must be >= 0, got {pole_weight}")
        self.fidelity_weight = float(fidelity_weight)
        self.tol = float(tol)
        self.max_iterations = int(max_iterations)
        self.sphere_metric = bool(sphere_metric)
        self.pole_weight = float(pole_weight)

    def describe(self) -> dict:
        return {
            "name": type(self).__name__,
            "fidelity_weight": self.fidelity_weight,
            "tol": self.tol,
            "max_iterations": self.max_iterations,
            "sphere_metric": self.sphere_metric,
            "pole_weight": self.pole_weight,
        }

    def refine(
        self,
        L0: Tensor,
        gx: Tensor,
        gy: Tensor,
        wx: Tensor,
        wy: Tensor,
        fidelity: Tensor,
        pole_gy: Tensor | None = None,
    ) -> tuple[Tensor, dict]:
        """Refine a blended ERP log-distance.

        Args:
            L0: [H, W] blended log-distance; gx, gy: [H, W] target differences to the next column (wrapping) and the
            next row (last row ignored); wx, wy: [H, W] their weights >= 0; fidelity: [H, W] per-pixel trust in L0
            (>= 0, multiplied by ``fidelity_weight``); pole_gy: [2, W/2] targets across the poles (used only when
            ``pole_weight > 0``; None = 0).
        Returns:
            L: [H, W] refined log-distance; info: {"iterations", "relative_residual", "converged", "seconds"}.
        """
        if L0.dim() != 2:
            raise ValueError(f"refinement: L0 must be [H, W], got shape {tuple(L0.shape)}")
        t0 = time.perf_counter()
        H, W = L0.shape
        fid = fidelity * (self.fidelity_weight * (math.pi / H) ** 2)
        if self.sphere_metric:
            mx, my, mf = sphere_metric_weights(H, L0.device, _working_dtype(L0.dtype))
            wx, wy, fid = wx * mx, wy * my, fid * mf
        wp = None
        if self.pole_weight > 0:
            if W % 2:
                raise ValueError(f"refinement: pole edges need an even ERP width, got W={W}")
            rows = torch.stack([wy[0], wy[-2] if H > 1 else wy[-1]])  # y-edges next to the top / bottom row
            wp = self.pole_weight * 0.5 * (rows[:, : W // 2] + rows[:, W // 2 :])
        gp = pole_gy if wp is not None else None
        result = solve_refinement(
            L0, gx, gy, wx, wy, fid, tol=self.tol, max_iterations=self.max_iterations, wp=wp, gp=gp
        )
        if L0.is_cuda:
            torch.cuda.synchronize(L0.device)
        info = {
            "iterations": result.iterations,
            "relative_residual": result.relative_residual,
            "converged": result.converged,
            "seconds": time.perf_counter() - t0,
        }
        return result.log_distance, info
