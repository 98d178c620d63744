"""Global alignment: one scale and shift per face, solved jointly so that overlapping faces agree.

Face f predicts relative disparity d_f. Along an ERP ray seen by face f at angle theta to its axis,

    inverse distance = cos(theta) * (s_f * d_f + t_f),

which is linear in (s_f, t_f). Every ERP sample seen by faces a and b gives one residual

    r_ab = cos_a (s_a d_a + t_a) - cos_b (s_b d_b + t_b),

divided by the current estimate of the inverse distance there (so the residual is relative and near and far
content weigh alike) and weighted by the blending weights, the predictors' confidences and the pixel's solid angle.
The normal equations are a (2F x 2F) system; the gauge (mean scale = 1) is imposed exactly with a Lagrange
multiplier, so each solve is closed form. Outlier samples (occlusion edges, wrong predictions) are down-weighted by
iteratively reweighted least squares with Huber weights on a robust (MAD) residual scale. A face whose scale comes out
non-positive is dropped and the system solved again without it; pixels whose aligned inverse distance is not
positive are marked invalid.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..geometry.spherical import erp_pixel_solid_angle
from ..geometry.face_sampling import gather_bilinear
from ..geometry.tangent import FaceSamples, erp_face_samples
from ..geometry.cache import ValueCache
from ..robust import MAD_TO_SIGMA, robust_weights
from .faces import AlignedFaces, FacePredictions

__all__ = ["Alignment", "GlobalAffineAlignment", "PerFaceMedianAlignment", "overlap_pairs"]

log = logging.getLogger(__name__)


class Alignment:
    """Turns per-face relative disparity into inverse distance in one common scale."""

    def align(self, pred: FacePredictions) -> AlignedFaces:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": type(self).__name__}


def overlap_pairs(samples: FaceSamples, mode: str = "all") -> tuple[Tensor, Tensor]:
    """Pairs of samples that fall on the same ERP pixel.

    Args:
        samples: with ``erp_index`` sorted ascending (:meth:`FaceSamples.sorted_by_pixel`).
        mode: ``"all"``: every pair of faces seeing a pixel (k (k - 1) / 2 for k faces); ``"chain"``: each face with
            the next one seeing the pixel, closed into a ring (k pairs for k > 2): far fewer rows, still tying
            every face of the pixel to every other.
    Returns:
        first [M], second [M]: indices into the samples.
    """
    idx = samples.erp_index
    n = idx.numel()
    if n > 1 and not bool((idx[1:] >= idx[:-1]).all()):
        raise ValueError("overlap_pairs needs samples sorted by pixel (FaceSamples.sorted_by_pixel())")
    if mode not in ("all", "chain"):
        raise ValueError(f"pair mode must be 'all' or 'chain', got {mode!r}")
    empty = torch.zeros(0, dtype=torch.long, device=idx.device)
    if n < 2:
        return empty, empty
    firsts, seconds = [], []
    max_gap = n - 1 if mode == "all" else 1
    for j in range(1, max_gap + 1):
        same = idx[j:] == idx[:-j]
        if not bool(same.any()):
            break
        a = torch.nonzero(same, as_tuple=True)[0]
        firsts.append(a)
        seconds.append(a + j)
    if mode == "chain":
        # close each pixel's chain: its last sample with its first, when the pixel has more than two
        start = torch.ones(n, dtype=torch.bool, device=idx.device)
        start[1:] = idx[1:] != idx[:-1]
        first_of = torch.nonzero(start, as_tuple=True)[0]
        counts = torch.diff(torch.cat((first_of, torch.tensor([n], device=idx.device))))
        ring = counts > 2
        firsts.append(first_of[ring])
        seconds.append(first_of[ring] + counts[ring] - 1)
    if not firsts:
        return empty, empty
    return torch.cat(firsts), torch.cat(seconds)


def overlap_samples(
    pred: FacePredictions, sample_height: int, weight_power: float, mode: str = "all"
) -> tuple[FaceSamples, Tensor, Tensor]:
    """Pixel-major overlap samples of ``pred``'s cameras at ``sample_height`` (float64) and their pairs."""
    cams64 = pred.cameras.to(pred.disparity.device, torch.float64)
    samples = erp_face_samples(cams64, sample_height, 2 * sample_height, weight_power).sorted_by_pixel()
    return (samples, *overlap_pairs(samples, mode))


def overlap_observations(pred: FacePredictions, samples: FaceSamples, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's disparity [N] (float64) and each pair's weight [M]: the two border weights and predictor
    confidences (geometric mean) times the pixel's solid angle (ERP rows near the poles are oversampled)."""
    # sampled in float64 from the float32 faces' texels (no float64 copy of every face pixel)
    # one map at a time ([F, 1, S, S] views): no stacked copy of both maps
    disp = gather_bilinear(pred.disparity[:, None], samples.face_index, samples.face_xy)[:, 0]
    conf = gather_bilinear(pred.confidence[:, None], samples.face_index, samples.face_xy)[:, 0].clamp(0, 1)
    H = samples.height
    solid = erp_pixel_solid_angle(H, 2 * H, dtype=torch.float64, device=disp.device)[:, 0]
    row = torch.div(samples.erp_index, 2 * H, rounding_mode="floor")
    w_sample = samples.weight * conf
    return disp, torch.sqrt(w_sample[a] * w_sample[b]) * solid[row[a]] / solid.max()


def huber_weights(est_a: Tensor, est_b: Tensor, use: Tensor, huber_k: float,
                  noise_floor: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Robust reweighting of pair residuals, relative to the local inverse distance with a noise floor.

    The residual a - b of a pair is taken to have a standard deviation proportional to sqrt(m^2 + m0^2), m the local
    inverse-distance level: relative errors where the content is near (m >> m0), and an absolute floor m0 =
    ``noise_floor`` x the median level where it is far (m << m0). Real networks' disparity noise does not shrink with
    the disparity (the far field and the sky edge sit at their noise floor), so purely relative weights (m0 = 0) let a
    few far-field samples with large relative errors pull the faces' shifts; a solve of exact (affine) faces is the
    same for any m0.

    Args:
        est_a, est_b: [M] the two faces' current inverse distance at each pair's pixel; use: [M] bool.
        noise_floor: m0 as a fraction of the median level over the used pairs (0: purely relative).
    Returns:
        robust [M] Huber weights (threshold ``huber_k`` x 1.4826 x median |normalised residual|), m [M] the effective
        level sqrt(m^2 + m0^2) by which residuals are divided (a pair's least-squares weight is 1 / m^2) and sigma
        (0-dim, the robust residual scale).
    """
    m = 0.5 * (est_a.abs() + est_b.abs())
    use = use & (m > 0)
    any_use = bool(use.any())
    nan = m.new_tensor(float("nan"))
    # medians over the used pairs as nanmedian of the rest set to NaN (the same value as median of the gathered
    # entries, which are never NaN: m > 0 there), without gathering them
    if noise_floor > 0 and any_use:
        m0 = noise_floor * torch.where(use, m, nan).nanmedian()
        m = torch.sqrt(m * m + m0 * m0)
    rel = torch.where(use, (est_a - est_b) / m.clamp_min(1e-30), 0.0)
    abs_rel = rel.abs()
    sigma = (MAD_TO_SIGMA * torch.where(use, abs_rel, nan).nanmedian().clamp_min(1e-12) if any_use
             else rel.new_tensor(1.0))
    robust = robust_weights(abs_rel, huber_k * sigma, "huber")
    return torch.where(use, robust, 0.0), m, sigma


def _solve_gauged(M: Tensor, gauge: Tensor, ridge: float) -> Tensor:
    """argmin x^T M x subject to gauge . x = 1, with a small ridge for faces without overlaps. Float64."""
    n = M.shape[0]
    A = M + ridge * (M.diagonal().mean().clamp_min(1e-30)) * torch.eye(n, dtype=M.dtype, device=M.device)
    y = torch.linalg.solve(A, gauge)
    return y / (gauge @ y)


#: the 10 distinct entries (i <= j) of a symmetric 4 x 4 block, and where each of the 16 entries is among them
_UPPER = [(i, j) for i in range(4) for j in range(i, 4)]
_FULL_FROM_UPPER = [_UPPER.index((min(i, j), max(i, j))) for i in range(4) for j in range(4)]


class GlobalAffineAlignment(Alignment):
    """Per-face scale and shift, solved jointly in closed form with robust reweighting.

    Args:
        sample_height: ERP height at which overlaps are sampled (the solve needs agreement, not resolution).
        irls_iterations: number of weighted least-squares solves (1 = plain least squares).
        huber_k: Huber threshold in robust standard deviations of the relative residual.
        ridge: relative Tikhonov term on the normal matrix (only matters for faces with no overlap).
        min_scale: faces whose solved scale is below ``min_scale`` times the median scale are dropped.
        weight_power: exponent of the border weight used to weigh overlap samples.
        noise_floor: residuals are relative to sqrt(m^2 + m0^2), m the local inverse distance and m0 this fraction
            of its median (:func:`huber_weights`): far-field samples at the networks' noise floor weigh less.
    """

    def __init__(
        self,
        sample_height: int = 64,
        irls_iterations: int = 6,
        huber_k: float = 1.345,
        ridge: float = 1e-9,
        min_scale: float = 1e-3,
        weight_power: float = 1.0,
        noise_floor: float = 0.1,
    ):
        if sample_height < 8:
            raise ValueError(f"sample_height must be >= 8, got {sample_height}")
        if irls_iterations < 1:
            raise ValueError(f"irls_iterations must be >= 1, got {irls_iterations}")
        self.sample_height = int(sample_height)
        self.irls_iterations = int(irls_iterations)
        self.huber_k = float(huber_k)
        self.ridge = float(ridge)
        self.min_scale = float(min_scale)
        self.weight_power = float(weight_power)
        if noise_floor < 0:
            raise ValueError(f"noise_floor must be >= 0, got {noise_floor}")
        self.noise_floor = float(noise_floor)
        #: derived geometry by value (the pipeline replaces it with the one it owns)
        self.cache = ValueCache()

    def describe(self) -> dict:
        return {
            "name": "affine",
            "sample_height": self.sample_height,
            "irls_iterations": self.irls_iterations,
            "huber_k": self.huber_k,
            "noise_floor": self.noise_floor,
        }

    def _samples(self, pred: FacePredictions) -> tuple[FaceSamples, Tensor, Tensor, Tensor, Tensor]:
        """Overlap samples and pairs at ``sample_height`` (cached per camera set): samples (pixel-major), first,
        second [M], the pair's face-pair type [M] and, per type, the (row, col) of its 4 x 4 normal-matrix block."""
        cams = pred.cameras
        key = ("affine", self.sample_height, self.weight_power, *cams.cache_key(), str(pred.disparity.device))
        return self.cache.get(key, lambda: self._build_samples(pred))

    def _build_samples(self, pred: FacePredictions):
        cams = pred.cameras
        samples, first, second = overlap_samples(pred, self.sample_height, self.weight_power)
        fa, fb = samples.face_index[first], samples.face_index[second]
        types, pair_type = torch.unique(fa * cams.num_faces + fb, return_inverse=True)
        ta, tb = types // cams.num_faces, types % cams.num_faces
        cols = torch.stack((2 * ta, 2 * ta + 1, 2 * tb, 2 * tb + 1), 1)  # [T, 4] unknowns of each type
        block_rows = cols[:, :, None].expand(-1, 4, 4).reshape(-1)
        block_cols = cols[:, None, :].expand(-1, 4, 4).reshape(-1)
        return samples, first, second, pair_type, (block_rows, block_cols, len(types))


    def solve(self, pred: FacePredictions) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Returns scale [F], shift [F], keep [F] bool (float64 / bool) and a report."""
        samples, a, b, pair_type, (block_rows, block_cols, num_types) = self._samples(pred)
        Fn = pred.cameras.num_faces
        disp, w_pair = overlap_observations(pred, samples, a, b)
        c, face = samples.cos_axis, samples.face_index
        dev = c.device
        fa, fb = face[a], face[b]
        # each pair's row of the design matrix over (s_fa, t_fa, s_fb, t_fb)
        coef = torch.stack((c[a] * disp[a], c[a], -c[b] * disp[b], -c[b]), 1)  # [M, 4]
        finite = torch.isfinite(coef).all(1)
        coef = torch.where(finite[:, None], coef, torch.zeros_like(coef))
        # the 10 distinct products of each pair's symmetric 4 x 4 block, [M, 10], reused every iteration
        outer = coef.new_empty(coef.shape[0], len(_UPPER))
        for k, (i, j) in enumerate(_UPPER):
            torch.mul(coef[:, i], coef[:, j], out=outer[:, k])
        weighted = torch.empty_like(outer)  # outer x each iteration's pair weights, one buffer for every iteration
        full = torch.tensor(_FULL_FROM_UPPER, device=dev)
        keep = torch.ones(Fn, dtype=torch.bool, device=dev)
        # faces without a single usable overlap sample (all sky / masked) are not in the solve: in the gauge (mean
        # scale 1) they would hold the whole scale while the faces with data collapse to the trivial all-zero fit
        usable = finite & (w_pair > 0)
        face_weight = torch.zeros(Fn, dtype=torch.float64, device=dev)
        face_weight.index_add_(0, fa[usable], w_pair[usable]).index_add_(0, fb[usable], w_pair[usable])
        has_data = face_weight > 0
        if not bool(has_data.any()):
            has_data = torch.ones_like(has_data)
        x = torch.zeros(2 * Fn, dtype=torch.float64, device=dev)
        x[0::2] = 1.0
        sigma = None
        report: dict = {"pairs": int(a.numel()), "dropped_faces": []}
        face2 = 2 * face
        est_raw = c * disp  # the first pass's inverse distance (raw disparity: only its scale matters)
        for _attempt in range(Fn):
            # what stays the same through the iterations of an attempt: the pairs in use, the solved faces, the gauge
            pairs_used = finite & keep[fa] & keep[fb]
            solved = keep & has_data
            dropped = (~solved).repeat_interleave(2)
            gauge = torch.zeros(2 * Fn, dtype=torch.float64, device=dev)
            gauge[0::2] = solved.double()
            n_solved = solved.double().sum()
            for it in range(self.irls_iterations):
                # current inverse distance of every sample
                est = est_raw if it == 0 else c * (x[face2] * disp + x[face2 + 1])
                robust, m, sigma = huber_weights(est[a], est[b], pairs_used, self.huber_k, self.noise_floor)
                if it == 0:
                    robust = (robust > 0).to(robust.dtype)  # plain least squares on the first pass
                w = w_pair * robust / (m * m).clamp_min(1e-30)
                upper = torch.zeros(num_types, 10, dtype=torch.float64, device=dev)
                upper.index_add_(0, pair_type, torch.mul(outer, w[:, None], out=weighted))
                M = torch.zeros(2 * Fn, 2 * Fn, dtype=torch.float64, device=dev)
                M.index_put_((block_rows, block_cols), upper[:, full].reshape(-1), accumulate=True)
                # dropped faces: pin them (identity rows) so the system stays regular; their values are unused
                M[dropped, :] = 0
                M[:, dropped] = 0
                M[dropped, dropped] = 1.0
                x = _solve_gauged(M, gauge, self.ridge) * n_solved
                report["iterations"] = it + 1
            scales = x[0::2]
            median_scale = scales[keep & has_data].median()
            # faces without data take the median map (scale, shift 0): nothing ties them to the others
            x[0::2] = torch.where(has_data, scales, median_scale)
            x[1::2] = torch.where(has_data, x[1::2], torch.zeros_like(median_scale))
            scales = x[0::2]
            bad = keep & ~(scales > self.min_scale * median_scale)
            if not bool(bad.any()):
                break
            for f in torch.nonzero(bad).flatten().tolist():
                log.warning("alignment: face %d got scale %.3g <= %g x median; dropping it", f, float(scales[f]), self.min_scale)
                report["dropped_faces"].append(f)
            keep = keep & ~bad
            if not bool((keep & has_data).any()):
                raise RuntimeError("alignment failed: every face got a non-positive scale")
        scale, shift = x[0::2], x[1::2]
        # the global scale is arbitrary: normalise the geometric mean of the kept scales to 1
        g = torch.exp(torch.log(scale[keep]).mean())
        scale, shift = scale / g, shift / g
        report["robust_sigma"] = None if sigma is None else float(sigma)
        report["scale"] = [round(v, 6) for v in scale.tolist()]
        report["shift"] = [round(v, 6) for v in shift.tolist()]
        return scale, shift, keep, report

    def align(self, pred: FacePredictions) -> AlignedFaces:
        scale, shift, keep, report = self.solve(pred)
        return AlignedFaces.from_affine(pred, scale, shift, keep, report)


class PerFaceMedianAlignment(Alignment):
    """The naive baseline: each face scaled on its own so that its median inverse distance is ``target_median``.

    No information flows between faces, so per-face errors stay and seams show; used as a reference in benchmarks.
    """

    def __init__(self, target_median: float = 1.0):
        self.target_median = float(target_median)

    def describe(self) -> dict:
        return {"name": "median", "target_median": self.target_median}

    def align(self, pred: FacePredictions) -> AlignedFaces:
        ones = torch.ones(pred.cameras.num_faces, dtype=pred.disparity.dtype, device=pred.disparity.device)
        raw = AlignedFaces.from_affine(pred, ones, torch.zeros_like(ones), ones.bool(), {})
        med = torch.stack([raw.inv_distance[f][raw.valid[f]].median() for f in range(len(ones))])
        scale = self.target_median / med
        keep = torch.isfinite(scale) & (scale > 0)
        return AlignedFaces.from_affine(pred, scale, torch.zeros_like(scale), keep, {"scale": scale.tolist()})
