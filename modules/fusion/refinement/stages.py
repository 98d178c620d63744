"""The refinement stages the pipeline runs (config group ``refinement``): :class:`GradientRefinement` and
:class:`NoRefinement`."""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import Tensor

from ...geometry.erp_maps import resize_map
from .checks import DEFAULT_MAX_ITERATIONS, DEFAULT_TOL, RefinementConfigError
from .operator import sphere_metric_weights
from .pcg import _working_dtype, solve_refinement

log = logging.getLogger(__name__)


class NoRefinement:
    """Identity refinement: returns the blend unchanged (``refinement=none``)."""

    def refine(self, L0: Tensor, *maps: Tensor, **options) -> tuple[Tensor, dict]:
        """Same arguments as :meth:`GradientRefinement.refine`; returns (L0, info) without a solve."""
        return L0, {"iterations": 0, "relative_residual": 1.0, "converged": False, "seconds": 0.0}

    def describe(self) -> dict:
        return {"name": type(self).__name__}

    def apply(self, blender, faces, distance: Tensor, confidence: Tensor) -> tuple[Tensor, dict]:
        """The pipeline's refinement stage: the blend unchanged and nothing to report."""
        return distance, {}


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
        height: ERP height at which :meth:`apply` solves (its correction is upsampled to the output size).
        pole_weight: if > 0, add edges across the poles, (r, u) to (r, u + W/2) in the first and last row, with
            weight pole_weight x the mean y-edge weight (after the metric) of the two pixels; target difference
            ``pole_gy`` (0 unless given). Mostly useful with ``sphere_metric: false``.
    """

    def __init__(
        self,
        fidelity_weight: float = 1.0,
        tol: float = DEFAULT_TOL,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        sphere_metric: bool = True,
        pole_weight: float = 0.0,
        height: int = 512,
    ):
        if not fidelity_weight > 0:
            raise RefinementConfigError(f"refinement.fidelity_weight must be > 0, got {fidelity_weight}")
        if not 0 < tol < 1:
            raise RefinementConfigError(f"refinement.tol must be in (0, 1), got {tol}")
        if int(max_iterations) < 1:
            raise RefinementConfigError(f"refinement.max_iterations must be >= 1, got {max_iterations}")
        if not pole_weight >= 0:
            raise RefinementConfigError(f"refinement.pole_weight must be >= 0, got {pole_weight}")
        if int(height) < 2:
            raise RefinementConfigError(f"refinement.height must be >= 2, got {height}")
        self.fidelity_weight = float(fidelity_weight)
        self.tol = float(tol)
        self.max_iterations = int(max_iterations)
        self.sphere_metric = bool(sphere_metric)
        self.pole_weight = float(pole_weight)
        self.height = int(height)

    def describe(self) -> dict:
        return {
            "name": type(self).__name__,
            "fidelity_weight": self.fidelity_weight,
            "tol": self.tol,
            "max_iterations": self.max_iterations,
            "sphere_metric": self.sphere_metric,
            "pole_weight": self.pole_weight,
            "height": self.height,
        }

    def apply(self, blender, faces, distance: Tensor, confidence: Tensor) -> tuple[Tensor, dict]:
        """The pipeline's refinement stage: solve at ``min(H, height)`` on ``blender``'s log-gradients of ``faces``
        and apply the (upsampled) correction to the full-size blend ``distance`` [H, W] (``confidence`` [H, W]: the
        blend's, reused when the solve is at full size)."""
        H, W = distance.shape
        h = min(H, self.height)
        g = blender.log_gradients(faces, h, 2 * h, blend=(distance, confidence) if h == H else None)
        L, info = self.refine(g["log_distance"], g["gx"], g["gy"], g["wx"], g["wy"], g["confidence"])
        correction = L - g["log_distance"]
        if not bool(torch.isfinite(correction).all()):
            log.warning("refinement produced non-finite values; keeping the blend unrefined")
            return distance, {**info, "solve_height": h, "applied": False}
        if h != H:
            correction = resize_map(correction, (H, W), erp=True)
        return distance * torch.exp(correction), {**info, "solve_height": h, "applied": True}

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
