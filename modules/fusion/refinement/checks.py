"""Refinement input checks, its configuration error and its result type."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import UserError


#: the solve's stopping rule, one default for :func:`~.pcg.solve_refinement` and :class:`~.stages.GradientRefinement`
#: (configs/refinement/gradient.yaml sets the same; they had drifted to 1e-4 / 200 in the solver)
DEFAULT_TOL = 1e-3
DEFAULT_MAX_ITERATIONS = 100


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
