"""Preconditioned conjugate gradients and the solve of the refinement energy (:func:`solve_refinement`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .checks import DEFAULT_MAX_ITERATIONS, DEFAULT_TOL, RefinementResult, _check_shapes, _check_weights, _raise_nonfinite
from .operator import _apply, _differences, _divergence, _System
from .parts import _Deflation, connected_components
from .preconditioner import _RowMeanPreconditioner


# ----------------------------------------------------------------------------------------------------------------
# Conjugate gradients
# ----------------------------------------------------------------------------------------------------------------


def conjugate_gradients(
    apply: Callable[[Tensor, Tensor], Tensor],
    rhs: Tensor,
    precondition: Callable[[Tensor, Tensor], object],
    tol: float,
    max_iterations: int,
    deflation: _Deflation | None = None,
) -> tuple[Tensor, int, float]:
    """Solve A x = rhs by (deflated) preconditioned CG from x = 0 (or the deflation's coarse solution), A symmetric
    positive (semi-)definite.

    Args:
        apply: ``apply(v, out)`` writes A v into ``out`` (and returns it); v, out: rhs's shape.
        rhs: any shape; overwritten (it becomes the residual).
        precondition: ``precondition(r, out)`` writes M^-1 r into ``out``.
        tol: stop when ||rhs - A x|| / ||rhs|| <= tol.
        max_iterations: at most this many iterations.
        deflation: the refinement's coarse space (None: plain PCG).
    Work arrays are allocated once. Returns (x, iterations, ||rhs - A x|| / ||rhs||).
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
        r.sub_(apply(x, Ap))
    z = torch.empty_like(r)

    def preconditioned() -> None:
        precondition(r, z)
        if deflation is not None:
            deflation.project_(z)

    preconditioned()
    p = z.clone()
    rz = float(torch.dot(r.view(-1), z.view(-1)))
    rel = float(torch.linalg.vector_norm(r)) / norm0
    it = 0
    while it < max_iterations and rel > tol:
        apply(p, Ap)
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
        preconditioned()
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
    tol: float = DEFAULT_TOL,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
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
    delta, iterations, rel = conjugate_gradients(lambda v, out: _apply(system, v, out=out), rhs,
                                                 lambda r, out: precond(r, out=out), float(tol), int(max_iterations),
                                                 deflation)
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


def refine_log_distance(L0: Tensor, gx: Tensor, gy: Tensor, wx: Tensor, wy: Tensor, fidelity: Tensor,
                        **options) -> Tensor:
    """Refined log-distance [H, W]; arguments and keyword options as :func:`solve_refinement` (which also reports
    iterations)."""
    return solve_refinement(L0, gx, gy, wx, wy, fidelity, **options).log_distance
