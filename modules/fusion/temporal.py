"""Temporal consistency of equirect distance maps along a video: relative motion, per-frame scale, flicker.

Each frame's distance map comes out of the pipeline with its own scale (median 1, or a per-frame metric estimate),
so a clip processed frame by frame "breathes". Here consecutive frames are compared where they see the same
surfaces, through the camera motion estimated from the distance maps themselves:

* :func:`align_pair` registers frame ``src`` onto frame ``dst``: a similarity ``X_dst = sigma R X_src + T`` found by
  robust (Cauchy-weighted) Gauss-Newton on the log-range residual of every point of ``src`` projected into ``dst``
  (a direct, projective alignment: a 360 view has no out-of-view points; occluded and moving points are
  down-weighted by the robust weights). It starts from the better of a yaw-only search over the panorama's columns
  and a given guess (the previous motion), so turning cameras converge.
  :func:`align_symmetric` registers both ways and averages the scales (cancelling the bias of sampling between
  pixels).
* :func:`solve_scales` picks per-frame log-scales ``x`` by sparse least squares: every aligned pair ``(i, j)`` in a
  window asks ``x_i - x_j = log sigma_ij`` (weighted by its inlier fraction) and a weak prior
  ``x_i = 0`` with weight ``1 / anchor_frames^2`` keeps each frame near its own per-frame scale over about
  ``anchor_frames`` frames (so a long clip cannot drift far, and a frame with no usable pair keeps its own scale).
* :func:`flicker` measures what a viewer sees: the median relative change of distance between two frames after the
  rigid motion is compensated, over static pixels (those changing by less than ``static_threshold``; larger
  changes are occlusions, moving objects or alignment failures, not flicker).

Points, poses and distances follow ARCHITECTURE.md (OpenCV axes, ERP pixel centres). Everything is a pure tensor
function; device and dtype come from the inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.spherical import direction_to_erp_pixel, erp_directions, erp_row_latitudes
from .refinement.pcg import conjugate_gradients

__all__ = [
    "PairAlignment", "downsample_distance", "so3_exp", "yaw_rotation", "range_residual", "align_pair",
    "align_symmetric", "invert", "compose", "drop_far", "solve_scales", "flicker", "weighted_median",
]


@dataclass
class PairAlignment:
    """``X_dst = exp(log_scale) R X_src + T`` in the units of the maps given; ``inlier_fraction``: share of points
    (solid-angle weighted) whose log-range residual is below the static threshold; ``residual``: their weighted
    median absolute log residual; ``iterations``: Gauss-Newton steps taken; ``init``: which start was used."""

    R: Tensor
    T: Tensor
    log_scale: float
    inlier_fraction: float
    residual: float
    iterations: int
    init: str = "yaw_search"
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"R": self.R.tolist(), "T": self.T.tolist(), "log_scale": self.log_scale,
                "inlier_fraction": self.inlier_fraction, "residual": self.residual, "iterations": self.iterations,
                "init": self.init}


def downsample_distance(distance: Tensor, height: int) -> Tensor:
    """Area-average inverse distance down to ``height`` rows (W = 2 height); invalid pixels (<= 0, non-finite) are
    left out of the averages (0 where none is valid).

    Args:
        distance: [H, W].
    Returns:
        [h, 2 h] with h = min(H, height).
    """
    H, W = distance.shape
    h = min(int(height), H)
    valid = torch.isfinite(distance) & (distance > 0)
    inv = torch.where(valid, 1.0 / torch.where(valid, distance, torch.ones_like(distance)), torch.zeros_like(distance))
    if h == H:
        return torch.where(valid, distance, torch.zeros_like(distance))
    pooled = F.adaptive_avg_pool2d(torch.stack((inv, valid.to(inv.dtype)))[None], (h, 2 * h))[0]
    ok = pooled[1] > 0
    return torch.where(ok, pooled[1] / pooled[0].clamp_min(1e-30), torch.zeros_like(pooled[0]))


def so3_exp(omega: Tensor) -> Tensor:
    """Rodrigues: axis-angle [3] -> rotation [3, 3] (differentiable, exact at 0)."""
    theta2 = (omega * omega).sum()
    theta = torch.sqrt(theta2 + 1e-30)
    zero = torch.zeros((), dtype=omega.dtype, device=omega.device)
    K = torch.stack((torch.stack((zero, -omega[2], omega[1])), torch.stack((omega[2], zero, -omega[0])),
                     torch.stack((-omega[1], omega[0], zero))))
    small = theta2 < 1e-12
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta2 + 1e-30))
    return torch.eye(3, dtype=omega.dtype, device=omega.device) + a * K + b * (K @ K)


def yaw_rotation(angle: float, dtype=torch.float64, device=None) -> Tensor:
    """Rotation about +y by ``angle`` radians (turns +z towards +x, i.e. increases longitude)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=dtype, device=device)


def _sample_log(log_dst: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear log distance of ``log_dst`` [h, w] where ``points`` [N, 3] project, wrapping in longitude.
    Returns (log distance [N], valid [N]: the four neighbours are valid)."""
    h, w = log_dst.shape
    u, v = direction_to_erp_pixel(points, h, w)
    padded = torch.cat((log_dst[:, -1:], log_dst, log_dst[:, :1]), dim=1)  # [h, w + 2]
    gx = (u + 1.0) / (w + 1) * 2.0 - 1.0
    gy = v / max(h - 1, 1) * 2.0 - 1.0
    grid = torch.stack((gx, gy), -1)
    finite = torch.isfinite(grid).all(-1)
    # a non-finite coordinate must never reach grid_sample (its backward indexes out of bounds with NaN)
    grid = torch.where(finite[:, None], grid.clamp(-1.0, 1.0), torch.zeros_like(grid))
    vals = F.grid_sample(padded[None, None], grid[None, None], mode="bilinear", padding_mode="border",
                         align_corners=True)[0, 0, 0]
    vals = torch.where(finite, vals, torch.full_like(vals, float("nan")))
    return vals, torch.isfinite(vals)


def range_residual(points_src: Tensor, log_dst: Tensor, R: Tensor, T: Tensor, log_scale: Tensor | float) -> Tensor:
    """log |Y| - log D_dst(project(Y)) with Y = exp(log_scale) R X_src + T.

    Args:
        points_src: [N, 3] points of the source frame (its camera coordinates).
        log_dst: [h, w] log distance of the destination frame (-inf where invalid: the residual is then non-finite).
        R: [3, 3]; T: [3]; log_scale: scalar.
    Returns:
        [N] residuals (non-finite where the destination has no valid distance).
    """
    scale = torch.exp(torch.as_tensor(log_scale, dtype=points_src.dtype, device=points_src.device))
    Y = scale * points_src @ R.T + T
    sampled, _ = _sample_log(log_dst, Y)
    return 0.5 * torch.log((Y * Y).sum(-1).clamp_min(1e-30)) - sampled


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """Weighted median of ``values`` [N] (weights [N] >= 0, not all 0)."""
    order = torch.argsort(values)
    v, w = values[order], weights[order]
    cum = torch.cumsum(w, 0)
    idx = torch.searchsorted(cum, 0.5 * cum[-1])
    return v[idx.clamp(max=len(v) - 1)]


def drop_far(distance: Tensor, far_ratio: float | None) -> Tensor:
    """``distance`` with non-finite pixels and those beyond ``far_ratio`` x its median set to 0 (invalid)."""
    valid = torch.isfinite(distance) & (distance > 0)
    if not bool(valid.any()):
        return torch.zeros_like(distance)
    if far_ratio is not None:
        valid = valid & (distance <= float(far_ratio) * distance[valid].median())
    return torch.where(valid, distance, torch.zeros_like(distance))


def _frame_points(distance: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(points [N, 3], solid-angle weights [N], valid [N]) of a small ERP distance map [h, w]."""
    h, w = distance.shape
    dirs = erp_directions(h, w, device=distance.device, dtype=distance.dtype)
    lat_w = torch.cos(erp_row_latitudes(h, distance.device, distance.dtype))
    valid = torch.isfinite(distance) & (distance > 0)
    points = dirs * torch.where(valid, distance, torch.zeros_like(distance))[..., None]
    return points.reshape(-1, 3), lat_w[:, None].expand(h, w).reshape(-1), valid.reshape(-1)


def align_pair(
    src: Tensor,
    dst: Tensor,
    src_weight: Tensor | None = None,
    init: tuple[Tensor, Tensor, float] | None = None,
    estimate_scale: bool = True,
    iterations: int = 20,
    cauchy_k: float = 2.5,
    min_cauchy: float = 0.005,
    static_threshold: float = 0.1,
    damping: float = 1e-6,
    yaw_search: bool = True,
    far_ratio: float | None = 1000.0,
) -> PairAlignment:
    """Register ``src`` onto ``dst`` (see module docstring).

    Args:
        src, dst: [h, 2h] distance maps (same size; small, e.g. 64 rows); <= 0 / non-finite = invalid.
        src_weight: [h, 2h] per-pixel weight of ``src`` (its confidence); None: ones.
        init: (R [3, 3], T [3], log_scale) start to try besides the yaw search (e.g. the previous motion).
        estimate_scale: False: rigid (log_scale stays at its start, 0 without ``init``).
        iterations: at most this many Gauss-Newton steps.
        cauchy_k: Cauchy weight scale in robust standard deviations (1.4826 MAD) of the residuals.
        min_cauchy: floor of the Cauchy scale (log units).
        static_threshold: a point whose relative range change is below this counts as an inlier.
        damping: Levenberg-Marquardt damping, relative to the normal matrix's diagonal.
        yaw_search: try the best column shift (rotation about the vertical) as a start.
        far_ratio: pixels farther than this many times the map's median distance are left out (sky: networks give
            it huge or arbitrary distances; it fixes no scale and no translation); None: keep all.
    Returns:
        :class:`PairAlignment` in float64 on ``src``'s device.
    """
    dtype, dev = torch.float64, src.device
    src, dst = drop_far(src.to(dtype), far_ratio), drop_far(dst.to(dtype), far_ratio)
    points, w_sphere, valid = _frame_points(src)
    weight = w_sphere * (src_weight.to(dtype).reshape(-1).clamp_min(0) if src_weight is not None else 1.0)
    keep = valid & (weight > 0)
    points, weight = points[keep], weight[keep]
    dst_ok = torch.isfinite(dst) & (dst > 0)
    log_dst = torch.where(dst_ok, torch.log(torch.where(dst_ok, dst, torch.ones_like(dst))),
                          torch.full_like(dst, float("nan")))
    log_ratio0 = float(torch.log(dst[dst_ok].median() / src[torch.isfinite(src) & (src > 0)].median()))
    candidates: list[tuple[str, Tensor, Tensor, float]] = []
    zero_T = torch.zeros(3, dtype=dtype, device=dev)
    if yaw_search:
        h, w = src.shape
        # every column shift at once: [w, h, w] differences of log distance (the scale guess removed)
        ls = torch.where(src > 0, torch.log(src.clamp_min(1e-30)), torch.full_like(src, float("nan")))
        ls = ls + (log_ratio0 if estimate_scale else 0.0)
        ld = torch.where(dst > 0, torch.log(dst.clamp_min(1e-30)), torch.full_like(dst, float("nan")))
        cols = (torch.arange(w, device=dev)[None, :] - torch.arange(w, device=dev)[:, None]) % w  # [k, u]: u - k
        diff = (ls[:, cols].permute(1, 0, 2) - ld[None]).abs().reshape(w, -1)  # shift k: src column u - k -> u
        k = int(torch.nan_to_num(diff, nan=float("inf")).median(dim=1).values.argmin())
        candidates.append(("yaw_search", yaw_rotation(2 * math.pi * k / w, dtype, dev), zero_T,
                           log_ratio0 if estimate_scale else 0.0))
    if init is not None:
        R0, T0, l0 = init
        candidates.append(("given", R0.to(dev, dtype), T0.to(dev, dtype), float(l0) if estimate_scale else 0.0))
    if not candidates:
        candidates.append(("identity", torch.eye(3, dtype=dtype, device=dev), zero_T,
                           log_ratio0 if estimate_scale else 0.0))
    best = None
    for name, R, T, l in candidates:
        result = _gauss_newton(points, weight, log_dst, R, T, torch.tensor(float(l), dtype=dtype, device=dev),
                               estimate_scale, iterations, cauchy_k, min_cauchy, damping, static_threshold)
        result.init = name
        if best is None or (result.inlier_fraction, -result.residual) > (best.inlier_fraction, -best.residual):
            best = result
    return best


def _gauss_newton(points: Tensor, weight: Tensor, log_dst: Tensor, R: Tensor, T: Tensor, log_scale: Tensor,
                  estimate_scale: bool, iterations: int, cauchy_k: float, min_cauchy: float, damping: float,
                  static_threshold: float) -> PairAlignment:
    """Robust Gauss-Newton of :func:`align_pair` from one start."""
    n_params = 7 if estimate_scale else 6
    # steps are limited to 0.2 rad, 0.2 log-scale and 0.2 x the median range
    max_step = 0.2
    unit = float(points.norm(dim=-1).median())
    points = points / unit
    T = T / unit
    log_dst = log_dst - math.log(unit)
    steps = 0
    for steps in range(1, iterations + 1):
        # r_i depends on its own Y_i only: dr/dY by one reverse pass, then the chain rule through
        # Y = exp(omega) Z + T + tau with Z = exp(l) R X:  dr/domega = Z x g, dr/dtau = g, dr/dl = g . Z
        Z = torch.exp(log_scale) * points @ R.T
        Y = (Z + T).detach().requires_grad_(True)
        sampled, _ = _sample_log(log_dst, Y)
        r_all = 0.5 * torch.log((Y * Y).sum(-1).clamp_min(1e-30)) - sampled
        (g,) = torch.autograd.grad(r_all.sum(), Y)
        r = r_all.detach()
        cols = [torch.cross(Z, g, dim=-1), g] + ([(g * Z).sum(-1, keepdim=True)] if estimate_scale else [])
        J = torch.cat(cols, dim=-1)  # [N, P]
        ok = torch.isfinite(r) & torch.isfinite(J).all(1)
        if int(ok.sum()) < 3 * n_params:
            break
        r_ok, J_ok, w_ok = r[ok], J[ok], weight[ok]
        mad = float(weighted_median((r_ok - weighted_median(r_ok, w_ok)).abs(), w_ok)) * 1.4826
        c = max(cauchy_k * mad, min_cauchy)
        wr = w_ok / (1.0 + (r_ok / c) ** 2)
        A = J_ok.T @ (wr[:, None] * J_ok)
        b = -(J_ok.T @ (wr * r_ok))
        A = A + damping * torch.diag(A.diagonal().clamp_min(1e-12))
        try:
            delta = torch.linalg.solve(A, b)
        except RuntimeError:
            break
        if not bool(torch.isfinite(delta).all()):
            break
        # trust region: at most max_step (radians, map units relative to the median range, log-scale) per step
        delta = delta * min(1.0, max_step / float(delta.abs().max().clamp_min(1e-30)))
        R = so3_exp(delta[:3]) @ R
        T = T + delta[3:6]
        if estimate_scale:
            log_scale = log_scale + delta[6]
        if float(delta.abs().max()) < 1e-5:
            break
    r = range_residual(points, log_dst, R, T, log_scale)
    ok = torch.isfinite(r)
    rel = torch.expm1(r.abs())
    inlier = ok & (rel < static_threshold)
    frac = float(weight[inlier].sum() / weight.sum().clamp_min(1e-30))
    res = float(weighted_median(r[inlier].abs(), weight[inlier])) if bool(inlier.any()) else float("inf")
    T = T * unit
    return PairAlignment(R=R, T=T, log_scale=float(log_scale), inlier_fraction=frac, residual=res, iterations=steps)


def invert(motion: tuple[Tensor, Tensor, float]) -> tuple[Tensor, Tensor, float]:
    """Inverse similarity: X = exp(-l) R^T X' - exp(-l) R^T T."""
    R, T, l = motion
    return R.T, -math.exp(-l) * (R.T @ T), -l


def align_symmetric(src: Tensor, dst: Tensor, src_weight: Tensor | None = None, dst_weight: Tensor | None = None,
                    **kwargs) -> PairAlignment:
    """:func:`align_pair` both ways; the log-scale is the mean of the forward one and minus the reverse one.

    Sampling ``dst`` between its pixels biases one registration's scale by about the same amount in both directions
    (about 3e-4 at 64 rows, falling as 1 / rows^2); the symmetric estimate cancels it. Motion, inliers and residual
    are the forward registration's; ``info`` holds both log-scales.
    """
    fwd = align_pair(src, dst, src_weight, **kwargs)
    rev_kwargs = {k: v for k, v in kwargs.items() if k not in ("init", "yaw_search")}
    rev = align_pair(dst, src, dst_weight, init=invert((fwd.R, fwd.T, fwd.log_scale)), yaw_search=False,
                     **rev_kwargs)
    fwd.info = {"log_scale_forward": fwd.log_scale, "log_scale_reverse": rev.log_scale,
                "inlier_fraction_reverse": rev.inlier_fraction}
    fwd.log_scale = 0.5 * (fwd.log_scale - rev.log_scale)
    fwd.inlier_fraction = min(fwd.inlier_fraction, rev.inlier_fraction)
    return fwd


def compose(first: tuple[Tensor, Tensor, float], then: tuple[Tensor, Tensor, float]) -> tuple[Tensor, Tensor, float]:
    """Similarity ``then`` after ``first`` (each ``(R, T, log_scale)`` with X' = exp(l) R X + T)."""
    R1, T1, l1 = first
    R2, T2, l2 = then
    return R2 @ R1, math.exp(l2) * (R2 @ T1) + T2, l1 + l2


def solve_scales(num_frames: int, pairs: list[tuple[int, int, float, float]], anchor_frames: float,
                 dense_max: int = 2048) -> np.ndarray:
    """Per-frame log-scales (see module docstring).

    The normal equations ``(A^T A + lam I) x = A^T b`` (A: one row ``sqrt(w) (e_i - e_j)`` per pair) form a weighted
    graph Laplacian plus ``lam I`` (symmetric positive definite), solved in torch: by Cholesky up to ``dense_max``
    frames, above that by conjugate gradients with a Jacobi preconditioner on the sparse system (to 1e-13 relative).

    Args:
        num_frames: N.
        pairs: (i, j, log_sigma_ij, weight): frame i scaled by sigma matches frame j, so x_i - x_j = log sigma_ij.
        anchor_frames: correlation length (frames) of the prior that keeps each frame near its own scale (> 0).
        dense_max: largest N solved as a dense system.
    Returns:
        x [N] float64: multiply frame i's distances by exp(x_i).
    """
    if anchor_frames <= 0:
        raise ValueError(f"anchor_frames must be positive, got {anchor_frames}")
    lam = 1.0 / float(anchor_frames) ** 2
    if not pairs:
        return np.zeros(num_frames, dtype=np.float64)
    dt = torch.float64
    i = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    j = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    log_sigma = torch.tensor([float(p[2]) for p in pairs], dtype=dt)
    w = torch.tensor([max(float(p[3]), 0.0) for p in pairs], dtype=dt)
    # A^T b: row k contributes +w_k l_k to x_i and -w_k l_k to x_j
    rhs = torch.zeros(num_frames, dtype=dt).index_add_(0, i, w * log_sigma).index_add_(0, j, -w * log_sigma)
    diag = torch.full((num_frames,), lam, dtype=dt).index_add_(0, i, w).index_add_(0, j, w)
    if num_frames <= dense_max:
        N = torch.diag(diag)
        N.index_put_((i, j), -w, accumulate=True)
        N.index_put_((j, i), -w, accumulate=True)
        x = torch.cholesky_solve(rhs[:, None], torch.linalg.cholesky(N))[:, 0]
        return x.numpy()

    def apply(v: Tensor, out: Tensor) -> Tensor:  # (A^T A + lam I) v without forming it
        torch.mul(diag, v, out=out)
        return out.sub_(torch.zeros_like(v).index_add_(0, i, w * v[j]).index_add_(0, j, w * v[i]))

    x, _, _ = conjugate_gradients(apply, rhs, lambda r, out: torch.div(r, diag, out=out), 1e-13, 10 * num_frames)
    return x.numpy()


def flicker(src: Tensor, dst: Tensor, R: Tensor, T: Tensor, static_threshold: float = 0.1,
            far_ratio: float | None = 1000.0) -> dict:
    """Relative change of distance from ``dst`` to ``src`` after a rigid motion (X_dst = R X_src + T).

    Args:
        src, dst: [h, 2h] distance maps of two frames in the same units.
        R: [3, 3]; T: [3] in those units.
        static_threshold: relative changes at or above this are not counted (occlusion, motion).
        far_ratio: pixels beyond this many times a map's median distance (sky) are not counted; None: all.
    Returns:
        ``median``: solid-angle weighted median of |relative change| over static pixels; ``static_fraction``:
        their share of the sphere (among pixels valid in both).
    """
    dtype = torch.float64
    src, dst = drop_far(src.to(dtype), far_ratio), drop_far(dst.to(dtype), far_ratio)
    points, w, valid = _frame_points(src)
    dst_ok = torch.isfinite(dst) & (dst > 0)
    log_dst = torch.where(dst_ok, torch.log(torch.where(dst_ok, dst, torch.ones_like(dst))),
                          torch.full_like(dst, float("nan")))
    r = range_residual(points[valid], log_dst, R.to(src.device, dtype), T.to(src.device, dtype), 0.0)
    w = w[valid]
    ok = torch.isfinite(r)
    rel = torch.expm1(r[ok].abs())
    w = w[ok]
    static = rel < static_threshold
    if not bool(static.any()):
        return {"median": float("nan"), "static_fraction": 0.0}
    return {"median": float(weighted_median(rel[static], w[static])),
            "static_fraction": float(w[static].sum() / w.sum())}
