"""Non-affine joint alignment: per face a monotone low-order curve in disparity, solved jointly in closed form.

Real networks do not map true disparity to their output affinely: the far range is compressed or stretched, and
differently in every image, so overlapping faces disagree non-linearly and no per-face scale and shift can make them
agree. Here face f's map is the polynomial of :mod:`.disparity_curves`,

    inverse distance = cos(theta) * sum_k c_fk * (d / level_f) ** k,     k = 0 .. degree,

linear in its coefficients, so the agreement of overlapping faces stays a linear least-squares problem:

* agreement: every ERP sample seen by faces a and b gives ``inv_a - inv_b`` divided by the local inverse distance
  (relative, i.e. a log-distance residual: near and far content weigh alike), weighted as in :mod:`.alignment`
  (border weights, confidences, solid angle) and robustly reweighted (Huber, IRLS);
* trust: a face's rows are also weighted by how much of its central half carries usable data (confidence > 0; the sky
  and the raw floor have 0), to the power ``trust_power``: a face that sees little but sky is close to arbitrary;
* regularisation: the non-affine coefficients (k >= 2) are pulled to 0 with weight ``curve_ridge`` x (the mean
  face's agreement weight) / (the face's scale)^2, so a face with thin overlaps stays nearly affine while a face with
  plenty of data bends as far as its overlaps ask;
* gauge: the mean (over faces) of the curves' rise from x = 0 to x = 1, relative to their affine start, is 1
  (a Lagrange multiplier, exact).

The normal matrix has (degree + 1) F unknowns: dense, assembled from per-face-pair blocks and solved with
``torch.linalg.solve`` on the input's device. A face whose solved curve is not increasing over its observed disparity
range gets a 10x stronger ridge and the system is solved again (at most ``monotone_retries`` times; then the face
keeps its affine start). The global affine solve (:class:`GlobalAffineAlignment`) initialises everything.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..geometry.cache import ValueCache
from .alignment import Alignment, GlobalAffineAlignment, huber_weights, overlap_observations, overlap_samples
from .disparity_curves import affine_coefficients, curve_basis, curve_slope, face_levels
from .faces import AlignedFaces, FacePredictions

__all__ = ["CurveAlignment", "face_trust"]

log = logging.getLogger(__name__)


def face_trust(confidence: Tensor, power: float) -> Tensor:
    """[F] share of a face's central half (per axis) with positive confidence, to ``power`` (0: all 1)."""
    S = confidence.shape[-1]
    q = S // 4
    centre = confidence[:, q:S - q, q:S - q]
    share = (centre > 0).to(torch.float64).mean((1, 2))
    return share.clamp_min(1e-3) ** power if power > 0 else torch.ones_like(share)


class CurveAlignment(Alignment):
    """Per-face monotone polynomial in disparity, solved jointly (see the module docstring).

    Args:
        degree: polynomial degree (1 = affine, 2-3 typical).
        curve_ridge: weight pulling the non-affine coefficients to 0, relative to the mean face's agreement weight.
        trust_power: exponent of the per-face trust (0 disables it).
        sample_height: ERP height at which overlaps are sampled.
        irls_iterations: robust reweighting rounds.
        huber_k: Huber threshold in robust standard deviations of the relative residual.
        monotone_retries: ridge increases (x10) for faces whose curve is not increasing.
        weight_power: exponent of the border weight used to weigh overlap samples.
        affine: the global per-face affine solve that starts it.
    """

    def __init__(self, degree: int = 2, curve_ridge: float = 0.01, trust_power: float = 1.0, sample_height: int = 64,
                 irls_iterations: int = 4, huber_k: float = 1.345, monotone_retries: int = 4,
                 weight_power: float = 1.0, affine: GlobalAffineAlignment | None = None):
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        if curve_ridge < 0 or trust_power < 0:
            raise ValueError(f"curve_ridge and trust_power must be >= 0, got {curve_ridge}, {trust_power}")
        if irls_iterations < 1:
            raise ValueError(f"irls_iterations must be >= 1, got {irls_iterations}")
        self.degree = int(degree)
        self.curve_ridge = float(curve_ridge)
        self.trust_power = float(trust_power)
        self.sample_height = int(sample_height)
        self.irls_iterations = int(irls_iterations)
        self.huber_k = float(huber_k)
        self.monotone_retries = int(monotone_retries)
        self.weight_power = float(weight_power)
        self.affine = affine if affine is not None else GlobalAffineAlignment()
        self._cache = ValueCache()

    @property
    def cache(self) -> ValueCache:
        """Derived overlap geometry keyed by value; setting it (the pipeline hands over its own) shares it with the
        inner affine solve."""
        return self._cache

    @cache.setter
    def cache(self, value: ValueCache) -> None:
        self._cache = value
        self.affine.cache = value

    def describe(self) -> dict:
        return {"name": "curve", "degree": self.degree, "curve_ridge": self.curve_ridge,
                "trust_power": self.trust_power, "irls_iterations": self.irls_iterations,
                "affine": self.affine.describe()}

    def _geometry(self, pred: FacePredictions):
        """Cached per camera set: samples, pairs, pair types and the scatter pattern of their blocks."""
        cams = pred.cameras
        key = ("curve", self.sample_height, self.weight_power, self.degree, *cams.cache_key())
        return self.cache.get(key, lambda: self._build_geometry(pred))

    def _build_geometry(self, pred: FacePredictions):
        cams = pred.cameras
        samples, a, b = overlap_samples(pred, self.sample_height, self.weight_power)
        Fn, P = cams.num_faces, self.degree + 1
        fa, fb = samples.face_index[a], samples.face_index[b]
        types, pair_type = torch.unique(fa * Fn + fb, return_inverse=True)
        ta, tb = types // Fn, types % Fn
        k = torch.arange(P, device=types.device)
        cols = torch.cat((ta[:, None] * P + k, tb[:, None] * P + k), 1)  # [T, 2P]
        rows_idx = cols[:, :, None].expand(-1, 2 * P, 2 * P).reshape(-1)
        cols_idx = cols[:, None, :].expand(-1, 2 * P, 2 * P).reshape(-1)
        return samples, a, b, pair_type, (rows_idx, cols_idx, len(types))

    def solve(self, pred: FacePredictions) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Returns coefficients [F, degree + 1], levels [F], keep [F] (float64 / bool) and a report."""
        scale, shift, keep, report = self.affine.solve(pred)
        Fn, P = pred.cameras.num_faces, self.degree + 1
        samples, a, b, pair_type, (rows_idx, cols_idx, num_types) = self._geometry(pred)
        disp, w_pair = overlap_observations(pred, samples, a, b)
        dev = disp.device
        level = face_levels(pred.disparity.double(), pred.confidence > 0).to(dev)
        coef0 = affine_coefficients(scale, shift, level, self.degree)
        if self.degree == 1:
            return coef0, level, keep, {**report, "degree": 1}
        c, face = samples.cos_axis, samples.face_index
        fa, fb = face[a], face[b]
        x = disp / level[face]
        phi = curve_basis(torch.nan_to_num(x), self.degree) * c[:, None]  # [N, P]
        row = torch.cat((phi[a], -phi[b]), 1)  # [M, 2P]
        use = torch.isfinite(x[a]) & torch.isfinite(x[b]) & keep[fa] & keep[fb]
        trust = face_trust(pred.confidence, self.trust_power).to(dev)
        w_pair = w_pair * torch.sqrt(trust[fa] * trust[fb])
        outer = (row[:, :, None] * row[:, None, :]).reshape(len(row), -1)
        scale_f = coef0[:, 1].abs().clamp_min(1e-30)  # each face's affine slope in x
        gauge = torch.zeros(Fn, P, dtype=torch.float64, device=dev)
        gauge[:, 1:] = (keep.double() / scale_f)[:, None]
        gauge = gauge.reshape(-1)
        curved = torch.zeros(Fn, P, dtype=torch.bool, device=dev)
        curved[:, 2:] = True
        ridge_factor = torch.ones(Fn, dtype=torch.float64, device=dev)
        # observed x range of each face, where monotonicity is required
        xs = torch.linspace(0, 1, 33, dtype=torch.float64, device=dev)
        x_hi = torch.stack([torch.nan_to_num(x[face == f], nan=0.0).abs().max() if bool((face == f).any())
                            else x.new_tensor(1.0) for f in range(Fn)]).clamp_min(1.0)
        grid = xs[None, :] * x_hi[:, None]  # [F, 33]
        coef = coef0.clone()
        report = {**report, "degree": self.degree, "monotone_fixes": []}
        for attempt in range(self.monotone_retries + 1):
            coef = coef0.clone()
            for it in range(self.irls_iterations):
                est = (phi * coef[face]).sum(1)
                robust, m, sigma = huber_weights(est[a], est[b], use, self.huber_k, self.affine.noise_floor)
                w = w_pair * robust / (m * m).clamp_min(1e-30)
                blocks = torch.zeros(num_types, (2 * P) ** 2, dtype=torch.float64, device=dev)
                blocks.index_add_(0, pair_type, outer * w[:, None])
                M = torch.zeros(Fn * P, Fn * P, dtype=torch.float64, device=dev)
                M.index_put_((rows_idx, cols_idx), blocks.reshape(-1), accumulate=True)
                per_face = torch.zeros(Fn, dtype=torch.float64, device=dev).index_add_(0, fa, w).index_add_(0, fb, w)
                mean_face = per_face[keep].mean().clamp_min(1e-30)
                reg = (self.curve_ridge * mean_face * ridge_factor / scale_f**2)[:, None] * curved.double()
                tiny = 1e-9 * M.diagonal().mean().clamp_min(1e-30)  # relative to the data, not to the ridge
                M = M + torch.diag(reg.reshape(-1)) + tiny * torch.eye(Fn * P, dtype=M.dtype, device=dev)
                dropped = (~keep).repeat_interleave(P)
                M[dropped, :] = 0
                M[:, dropped] = 0
                M[dropped, dropped] = 1.0
                y = torch.linalg.solve(M, gauge)
                sol = y / (gauge @ y) * keep.double().sum()
                coef = torch.where(keep[:, None], sol.view(Fn, P), coef0)
            slope = curve_slope(coef, grid)
            bad = keep & ~(slope > 0).all(1)
            if not bool(bad.any()):
                break
            if attempt == self.monotone_retries:
                coef = torch.where(bad[:, None], coef0, coef)
                report["monotone_fixes"].append({"affine": torch.nonzero(bad).flatten().tolist()})
                break
            ridge_factor = torch.where(bad, ridge_factor * 10.0, ridge_factor)
            report["monotone_fixes"].append({"stiffer": torch.nonzero(bad).flatten().tolist()})
        # the global scale is arbitrary: geometric mean of the kept faces' slopes at x = 1 relative to affine -> 1
        g = torch.exp(torch.log(curve_slope(coef, torch.ones(Fn, 1, dtype=torch.float64, device=dev))[:, 0][keep]
                                .clamp_min(1e-30) / scale_f[keep]).mean())
        coef = coef / g
        report["trust"] = [round(v, 4) for v in trust.tolist()]
        report["coefficients"] = [[round(v, 6) for v in r] for r in coef.tolist()]
        return coef, level, keep, report

    def align(self, pred: FacePredictions) -> AlignedFaces:
        coef, level, keep, report = self.solve(pred)
        from ..geometry.tangent import face_cos_to_axis

        dtype = pred.disparity.dtype
        x = pred.disparity.double() / level[:, None, None]
        phi = curve_basis(x, self.degree)  # [F, S, S, P]
        cos = face_cos_to_axis(pred.cameras.to(pred.disparity.device, torch.float64))
        inv = cos * (phi * coef[:, None, None, :]).sum(-1)
        valid = keep[:, None, None] & torch.isfinite(inv) & (inv > 0)
        trust = face_trust(pred.confidence, self.trust_power).to(pred.confidence)
        return AlignedFaces(inv.to(dtype), valid, pred.confidence * trust[:, None, None], pred.cameras, report)
