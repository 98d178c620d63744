"""Log-distance gradient merge: the panorama's log distance solved from the faces' own log-distance differences.

The idea (after the panorama merge of MoGe, Wang et al. 2025, written anew here in torch): a face's log distance
``log(1 / inv_f)`` is known up to its own additive constant (its scale), so differences between neighbouring pixels of
one face carry no per-face scale error at all. For every ERP pixel edge (to the next column, wrapping, and to the next
row) each face that sees both ends gives its own difference (the face is resampled onto the ERP grid and differenced
there, so a face never contributes a seam); the faces' differences are combined (border weight x confidence, with
robust Huber reweighting across the faces so a face that disagrees with the others, e.g. a near-arbitrary
low-information face or a blurred edge, counts less), and the map whose differences match them is found by least
squares. Non-affine errors then only enter through the gradients.

Coarse to fine: the solve starts at ``coarsest_height`` rows, where the faces' log distance is area-averaged to about
the ERP pixel size and the map is held to the blend (the affine alignment's result) with weight ``anchor_weight`` per
steradian (1/rad^2: features larger than about 1/sqrt(anchor_weight) radians come from the blend, smaller ones from the
gradients; the blend also fixes the one free constant). Each finer level (heights doubling up to ``height``) starts
from the coarser solution, upsampled, and is held to it with ``level_weight`` x (coarser height / pi)^2 per steradian
(1: at about the coarser level's pixel size, which smooths noise but smears depth edges the coarse levels cannot hold;
the default 0.01 lets each level's own differences decide its detail). Each level is
the weighted screened-Poisson system of :mod:`modules.fusion.refinement` (PCG with the FFT / cyclic-reduction
preconditioner), on the tensors' device; no SciPy.

Combined with the alignment: the per-face affine solve (``alignment=affine``) removes each face's disparity shift
first (log differences of a shifted disparity are not scale-invariant), and its blend anchors the lowest frequencies.
The pipeline runs this as its refinement stage (``refinement=log_merge``): the correction is solved at
``min(H, height)`` rows and applied (upsampled) to the full-size blend, as :class:`GradientRefinement` does.
Sky pixels (invalid in the faces) give no differences; the sky mask is applied after.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.cache import ValueCache
from ..geometry.erp_maps import resize_map
from ..geometry.tangent import FaceSamples, erp_face_samples, sample_faces
from ..robust import MAD_TO_SIGMA, robust_weights
from .faces import AlignedFaces
from .refinement.operator import sphere_metric_weights
from .refinement.pcg import solve_refinement

__all__ = ["LogGradientMerge", "face_log_distance", "merged_differences", "pyramid_heights"]

log = logging.getLogger(__name__)


def pyramid_heights(height: int, coarsest: int) -> list[int]:
    """ERP heights of the levels, coarsest first: ``height``, ``height / 2``, ... down to >= ``coarsest``."""
    hs = [int(height)]
    while hs[-1] // 2 >= max(int(coarsest), 2) and hs[-1] % 2 == 0:
        hs.append(hs[-1] // 2)
    return hs[::-1]


def face_log_distance(faces: AlignedFaces, factor: int) -> tuple[Tensor, Tensor]:
    """Each face's log distance and its weight, area-averaged over ``factor`` x ``factor`` pixel blocks.

    Args:
        faces: aligned faces (``inv_distance``, ``valid``, ``confidence`` [F, S, S]).
        factor: block size (1: none); S need not be a multiple (the last block is partial).
    Returns:
        L [F, S', S'] (0 where no valid pixel) and q [F, S', S'] the mean of valid x confidence over the block.
    """
    inv = faces.inv_distance
    q = faces.valid.to(inv.dtype) * faces.confidence.to(inv.dtype).clamp(0, 1)
    L = -torch.log(torch.where(faces.valid, inv, torch.ones_like(inv)))
    L = torch.where(torch.isfinite(L), L, torch.zeros_like(L))
    q = torch.where(torch.isfinite(L), q, torch.zeros_like(q))
    if factor > 1:
        num = F.avg_pool2d((q * L)[:, None], factor, ceil_mode=True)[:, 0]
        q = F.avg_pool2d(q[:, None], factor, ceil_mode=True)[:, 0]
        L = num / q.clamp_min(1e-12)
    return L, q


def merged_differences(L: Tensor, q: Tensor, samples: FaceSamples, robust_iterations: int = 2,
                       huber_k: float = 2.0) -> dict[str, Tensor]:
    """Every face's log-distance differences across ERP edges, combined over the faces.

    Args:
        L, q: [F, S', S'] face log distance and weight (:func:`face_log_distance`).
        samples: the faces' samples at the level's ERP size (H, W).
        robust_iterations: Huber reweighting rounds across the faces (0: weighted mean).
        huber_k: Huber threshold in robust standard deviations of a face's difference from the combined one.
    Returns:
        ``gx``, ``gy`` [H, W] target differences (next column, wrapping; next row), ``wx``, ``wy`` [H, W] their
        weights in [0, 1] (0: no face saw both ends), ``faces_x`` / ``faces_y`` [H, W] how many faces gave one.
    """
    H, W, Fn = samples.height, samples.width, samples.num_faces
    vals = sample_faces(torch.stack((q * L, q), 1), samples)  # [N, 2], premultiplied: normalised convolution
    qs = vals[:, 1]
    Ls = vals[:, 0] / qs.clamp_min(1e-12)
    dtype = L.dtype
    value = torch.zeros(Fn, H * W, dtype=dtype, device=L.device)
    weight = torch.zeros(Fn, H * W, dtype=dtype, device=L.device)
    border = torch.zeros(Fn, H * W, dtype=dtype, device=L.device)
    value[samples.face_index, samples.erp_index] = Ls
    weight[samples.face_index, samples.erp_index] = samples.weight.to(dtype) * qs
    border[samples.face_index, samples.erp_index] = samples.weight.to(dtype)
    value, weight, border = value.view(Fn, H, W), weight.view(Fn, H, W), border.view(Fn, H, W)
    out = {}
    for axis in ("x", "y"):
        if axis == "x":
            nxt = lambda t: torch.roll(t, -1, dims=2)  # noqa: E731
            here = lambda t: t  # noqa: E731
        else:
            nxt = lambda t: F.pad(t[:, 1:], (0, 0, 0, 1))  # noqa: E731  (the last row has no edge)
            here = lambda t: t  # noqa: E731
        diff = nxt(value) - here(value)
        w = torch.minimum(nxt(weight), here(weight))
        geo = torch.minimum(nxt(border), here(border)).sum(0)
        w = torch.where(torch.isfinite(diff), w, torch.zeros_like(w))
        diff = torch.where(w > 0, diff, torch.zeros_like(diff))
        robust = torch.ones_like(w)
        g = (w * diff).sum(0) / w.sum(0).clamp_min(1e-30)
        for _ in range(int(robust_iterations)):
            r = (diff - g[None]).abs()
            used = w > 0
            if not bool(used.any()):
                break
            sigma = MAD_TO_SIGMA * r[used].median().clamp_min(1e-9)
            robust = robust_weights(r, huber_k * sigma, "huber")
            g = (w * robust * diff).sum(0) / (w * robust).sum(0).clamp_min(1e-30)
        wsum = (w * robust).sum(0)
        out[f"g{axis}"] = g
        out[f"w{axis}"] = (wsum / geo.clamp_min(1e-30)).clamp(0, 1)
        out[f"faces_{axis}"] = (w > 0).sum(0)
    return out


class LogGradientMerge:
    """The refinement stage ``refinement=log_merge`` (see the module docstring).

    Args:
        height: ERP height of the finest level; the correction is upsampled from there to the output size.
        coarsest_height: the pyramid's coarsest level (heights double from there to ``height``).
        anchor_weight: weight per steradian (1/rad^2) of the blend at the coarsest level (times its confidence).
        level_weight: weight of the upsampled coarser solution at each finer level, in units of (coarser height /
            pi)^2 per steradian (1: held at about the coarser level's pixel size).
        robust_iterations: Huber rounds combining the faces' differences (0: weighted mean).
        huber_k: Huber threshold in robust standard deviations.
        tol, max_iterations: PCG stopping rule per level.
        weight_power: border-weight exponent of the faces (as the blender's).
    """

    def __init__(self, height: int = 512, coarsest_height: int = 32, anchor_weight: float = 1.0,
                 level_weight: float = 0.01, robust_iterations: int = 0, huber_k: float = 2.0, tol: float = 1e-3,
                 max_iterations: int = 100, weight_power: float = 1.0):
        if int(height) < 8 or int(coarsest_height) < 4:
            raise ValueError(f"log_merge: need height >= 8 and coarsest_height >= 4, got {height}, {coarsest_height}")
        if not anchor_weight > 0 or not level_weight > 0:
            raise ValueError(f"log_merge: anchor_weight and level_weight must be > 0, got {anchor_weight}, {level_weight}")
        if not 0 < tol < 1 or int(max_iterations) < 1:
            raise ValueError(f"log_merge: need 0 < tol < 1 and max_iterations >= 1, got {tol}, {max_iterations}")
        self.height = int(height)
        self.coarsest_height = int(coarsest_height)
        self.anchor_weight = float(anchor_weight)
        self.level_weight = float(level_weight)
        self.robust_iterations = int(robust_iterations)
        self.huber_k = float(huber_k)
        self.tol = float(tol)
        self.max_iterations = int(max_iterations)
        self.weight_power = float(weight_power)
        #: derived geometry by value (the pipeline replaces it with the one it owns)
        self.cache = ValueCache()

    def describe(self) -> dict:
        return {"name": "log_merge", "height": self.height, "coarsest_height": self.coarsest_height,
                "anchor_weight": self.anchor_weight, "level_weight": self.level_weight,
                "robust_iterations": self.robust_iterations}

    def _samples(self, faces: AlignedFaces, h: int) -> FaceSamples:
        cams = faces.cameras
        dev, dtype = faces.inv_distance.device, faces.inv_distance.dtype
        key = ("log_merge", h, self.weight_power, *cams.cache_key(), str(dev), str(dtype))
        return self.cache.get(key, lambda: erp_face_samples(cams.to(dev, dtype), h, 2 * h, self.weight_power))

    @staticmethod
    def _pool_factor(faces: AlignedFaces, h: int) -> int:
        """Face pixels per ERP pixel of height h at the face centre (area-average blocks of about one ERP pixel)."""
        cams = faces.cameras
        face_px_per_rad = (cams.size / 2) / float(cams.tan_half_fov.max())
        return max(1, int(face_px_per_rad / (h / math.pi)))

    def merge(self, faces: AlignedFaces, anchor: Tensor, anchor_confidence: Tensor) -> tuple[Tensor, dict]:
        """Solve the pyramid.

        Args:
            faces: the aligned faces (sky and invalid pixels marked invalid).
            anchor: [h, 2h] log distance the coarsest level is held to (the blend), at the finest level's size.
            anchor_confidence: [h, 2h] its weight in [0, 1].
        Returns:
            L [h, 2h] the merged log distance and a report (iterations per level, seconds).
        """
        t0 = time.perf_counter()
        h = anchor.shape[0]
        dtype = torch.float64 if anchor.dtype == torch.float64 else torch.float32
        heights = pyramid_heights(h, self.coarsest_height)
        report = {"levels": heights, "iterations": [], "converged": []}
        L = None
        for i, hl in enumerate(heights):
            L_f, q_f = face_log_distance(faces, self._pool_factor(faces, hl))
            diffs = merged_differences(L_f.to(dtype), q_f.to(dtype), self._samples(faces, hl),
                                       self.robust_iterations, self.huber_k)
            mx, my, mf = sphere_metric_weights(hl, anchor.device, dtype)
            area = (math.pi / hl) ** 2
            if i == 0:
                target = area_resize(anchor.to(dtype), anchor_confidence.to(dtype), hl)
                conf = resize_map(anchor_confidence.to(dtype), (hl, 2 * hl), erp=True).clamp(0, 1)
                # every pixel keeps a little weight: parts no face sees are pinned to the blend
                fid = self.anchor_weight * area * (conf + 1e-3)
                start = target
            else:
                target = resize_map(L, (hl, 2 * hl), erp=True)
                fid = torch.full_like(target, self.level_weight * area * (heights[i - 1] / math.pi) ** 2)
                start = target
            res = solve_refinement(target, diffs["gx"], diffs["gy"], diffs["wx"] * mx, diffs["wy"] * my, fid * mf,
                                   tol=self.tol, max_iterations=self.max_iterations, x0=start)
            L = res.log_distance
            report["iterations"].append(res.iterations)
            report["converged"].append(bool(res.converged))
        report["seconds"] = time.perf_counter() - t0
        return L, report

    def apply(self, blender, faces: AlignedFaces, distance: Tensor, confidence: Tensor) -> tuple[Tensor, dict]:
        """The pipeline's refinement stage: merge at ``min(H, height)`` rows and apply the (upsampled) correction to
        the full-size blend ``distance`` [H, W] (confidence [H, W]: the blend's)."""
        H, W = distance.shape
        h = min(H, self.height)
        log_blend = torch.log(distance.double() if distance.dtype == torch.float64 else distance.float())
        small = area_resize(log_blend, confidence.to(log_blend.dtype), h) if h != H else log_blend
        conf_small = resize_map(confidence.to(log_blend.dtype), (h, 2 * h), erp=True) if h != H else confidence
        L, info = self.merge(faces, small, conf_small.to(log_blend.dtype))
        correction = L.to(log_blend.dtype) - small
        if not bool(torch.isfinite(correction).all()):
            log.warning("log_merge produced non-finite values; keeping the blend")
            return distance, {**info, "solve_height": h, "applied": False}
        if h != H:
            correction = resize_map(correction, (H, W), erp=True)
        return (distance * torch.exp(correction)).to(distance.dtype), {**info, "solve_height": h, "applied": True}


def area_resize(x: Tensor, weight: Tensor, h: int) -> Tensor:
    """[H, 2H] map -> [h, 2h]: weighted block average when H is a multiple of h, else bilinear (ERP wrap)."""
    H = x.shape[0]
    if H == h:
        return x
    if H % h == 0:
        k = H // h
        w = weight.clamp_min(1e-6)
        num = F.avg_pool2d((x * w)[None, None], k)[0, 0]
        return num / F.avg_pool2d(w[None, None], k)[0, 0]
    return resize_map(x, (h, 2 * h), erp=True)
