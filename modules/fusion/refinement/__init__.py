"""Gradient-domain (screened Poisson) refinement of the ERP log-distance (a package: checks, operator, preconditioner,
parts (deflation), pcg, stages).

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

from .checks import RefinementConfigError, RefinementResult
from .operator import apply_refinement_operator, refinement_energy, sphere_metric_weights
from .parts import connected_components
from .pcg import refine_log_distance, solve_refinement
from .stages import GradientRefinement, NoRefinement

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
