"""Sky and infinity: rays that meet no surface, detected from the predictions.

Real networks (MiDaS, Depth Anything) give the sky and very far content a disparity near zero: their output floor.
After a per-face shift such pixels would come out at ordinary distances (or negative ones), so they must be found
before the faces are aligned and blended. The test uses only the predictions:

1. *raw floor*: in each face, pixels whose raw disparity is at most ``raw_threshold`` x the face's disparity level
   (its 95th percentile of |d|) are sky candidates. A first alignment leaves out everything below
   ``first_pass_threshold`` x the level (the far field, candidates, and a sky that follows the face's shift): the
   floor value follows no surface's map, and a sky that does follow it would only pin the solve to ~0.
2. *aligned infinity*: after the alignment, a face pixel whose aligned inverse distance is at most
   ``aligned_threshold`` x the panorama's median aligned inverse distance (or not positive) votes sky too: the sky of
   a network whose floor moves with its shift maps to ~0 once the shift is solved.
3. *consistency*: where most of the faces that see an ERP pixel are not candidates, the pixel is sky when at least
   ``vote_threshold`` of them (border-weighted) give ~0. Where most are candidates, it is sky when their aligned
   values are ~0 on average or disagree (relative spread above ``spread_threshold``): a network's floor value for the
   sky maps to each face's own shift, while a far surface that sits at a face's floor still maps to one common
   inverse distance. The shares are averaged over a small neighbourhood (``smooth_px`` at ``detect_height``).
   Networks blur depth edges, so pixels next to the sky whose inverse distance is well below that of their surface
   neighbours (``edge_ratio``) join the sky, ``edge_iterations`` pixels deep.
4. the faces are aligned again on everything but the sky and the raw floor (always when no sky was found; with
   sky only if ``realign``), and the detection is repeated on that alignment.

Contract of the outputs (the pipeline applies it): distance ``+inf`` and confidence 0 on sky pixels; the faces'
sky pixels are invalid for blending and refinement, so neither uses them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.cache import DiskCache, ValueCache
from ..geometry.erp_maps import pad_erp
from ..geometry.face_boxes import FaceBoxes, boxes_to_erp, cached_erp_face_boxes
from ..geometry.tangent import TangentCameras, erp_to_faces
from .disparity_curves import face_levels
from .faces import AlignedFaces, FacePredictions
from .sky_edges import extend_surfaces_to_sky, snap_sky_to_image

__all__ = ["SkyDetector", "sanitize_predictions"]


def sanitize_predictions(pred: FacePredictions) -> tuple[FacePredictions, Tensor]:
    """Non-finite disparities become 0 with confidence 0 (NaN / inf from a network never reach a solve).

    Returns:
        the cleaned predictions and ``finite`` [F, S, S] bool.
    """
    finite = torch.isfinite(pred.disparity)
    if bool(finite.all()) and bool(torch.isfinite(pred.confidence).all()):
        return pred, finite
    d = torch.where(finite, pred.disparity, torch.zeros_like(pred.disparity))
    c = torch.where(finite & torch.isfinite(pred.confidence), pred.confidence, torch.zeros_like(pred.confidence))
    return FacePredictions(d, c, pred.cameras), finite


class SkyDetector:
    """Detect sky / infinity from the face predictions and align the faces without it (see the module docstring).

    Args:
        enabled: False: no detection (every pixel is taken as a surface).
        raw_threshold: raw candidates: disparity <= this x the face's disparity level (95th percentile of |d|).
        aligned_threshold: aligned inverse distance <= this x the median aligned inverse distance votes sky.
        vote_threshold: share of the non-candidate faces seeing a pixel whose aligned value is ~0 that makes it sky.
        spread_threshold: relative spread of the candidate faces' aligned values above which they disagree (sky).
        first_pass_threshold: the first alignment leaves out raw disparities <= this x the face's level (the far
            field and any sky that follows the face's shift), so that the detection starts from the near surfaces.
        edge_ratio, edge_iterations: a pixel touching the sky whose blended inverse distance is below edge_ratio x the
            largest of its 3 x 3 surface neighbours' joins the sky (a blurred edge), repeated edge_iterations times.
        smooth_px: radius (pixels at ``detect_height``) of the box over which the share is averaged.
        detect_height: ERP height at which the votes are counted (the mask is upsampled, nearest, to the output).
        realign: align again without the detected sky.
        weight_power: border-weight exponent of the votes.
        far_limit: output pixels farther than this x the median surface distance are sky too (None: off): beyond
            it a relative-depth network resolves nothing (the noise floor), and such pixels would float in every mesh
            and point cloud (1 / ``aligned_threshold`` by default: the same line the votes draw).
        cache_dir: folder keeping the ERP <- face tables between processes (the blender's; None: off).
    """

    def __init__(self, enabled: bool = True, raw_threshold: float = 0.02, aligned_threshold: float = 0.02,
                 vote_threshold: float = 0.5, spread_threshold: float = 0.5, first_pass_threshold: float = 0.1,
                 edge_ratio: float = 0.5, edge_iterations: int = 2, smooth_px: int = 0, detect_height: int = 256, realign: bool = True,
                 weight_power: float = 1.0, far_limit: float | None = 50.0, cache_dir: str | None = None,
                 image_band: int = 2, image_window: int = 6, image_both_ways: bool = False,
                 edge_band: float = 0.012, edge_grazing: float = 0.3, edge_noise: float = 1.0):
        if not 0 < vote_threshold <= 1:
            raise ValueError(f"vote_threshold must be in (0, 1], got {vote_threshold}")
        if detect_height < 8:
            raise ValueError(f"detect_height must be >= 8, got {detect_height}")
        if image_band < 0 or (image_band > 0 and image_window <= image_band):
            raise ValueError(f"image_band must be >= 0 and image_window > image_band, got {image_band}, {image_window}")
        if edge_band < 0 or edge_grazing < 0 or edge_noise < 0:
            raise ValueError(f"edge_band, edge_grazing and edge_noise must be >= 0, got {edge_band}, {edge_grazing}, "
                             f"{edge_noise}")
        if far_limit is not None and not far_limit > 1:
            raise ValueError(f"far_limit must be > 1 or null, got {far_limit}")
        self.enabled = bool(enabled)
        self.raw_threshold = float(raw_threshold)
        self.aligned_threshold = float(aligned_threshold)
        self.vote_threshold = float(vote_threshold)
        self.spread_threshold = float(spread_threshold)
        self.first_pass_threshold = float(first_pass_threshold)
        self.edge_ratio = float(edge_ratio)
        self.edge_iterations = int(edge_iterations)
        self.smooth_px = int(smooth_px)
        self.detect_height = int(detect_height)
        self.realign = bool(realign)
        self.weight_power = float(weight_power)
        #: ERP <- face samples per (camera set, height); the pipeline replaces it with its own shared cache
        self.cache = ValueCache()
        #: ERP <- face tables kept between processes (``cache_dir``, the blender's; None: off)
        self.disk = None if cache_dir is None else DiskCache(cache_dir)
        self.far_limit = None if far_limit is None else float(far_limit)
        self.image_band = int(image_band)
        self.image_window = int(image_window)
        self.image_both_ways = bool(image_both_ways)
        self.edge_band = float(edge_band)
        self.edge_grazing = float(edge_grazing)
        self.edge_noise = float(edge_noise)

    def describe(self) -> dict:
        return {"enabled": self.enabled, "raw_threshold": self.raw_threshold,
                "aligned_threshold": self.aligned_threshold, "vote_threshold": self.vote_threshold,
                "far_limit": self.far_limit, "image_band": self.image_band, "edge_band": self.edge_band}

    def raw_candidates(self, pred: FacePredictions, threshold: float | None = None,
                       level: Tensor | None = None) -> Tensor:
        """[F, S, S] bool: finite raw disparity at the face's floor (<= threshold (default raw_threshold) x its
        level). ``level``: the faces' :func:`face_levels` when the caller has them (not computed again)."""
        level = face_levels(pred.disparity) if level is None else level
        d = pred.disparity
        t = self.raw_threshold if threshold is None else float(threshold)
        return torch.isfinite(d) & (d <= t * level[:, None, None].to(d))

    def _samples(self, faces: AlignedFaces, height: int) -> FaceBoxes:
        """The ERP <- face boxes at ``height`` (shared through the cache with the blender's at the same size)."""
        cams = faces.cameras.to(faces.inv_distance.device, faces.inv_distance.dtype)
        return cached_erp_face_boxes(cams, height, 2 * height, self.weight_power, self.disk, self.cache)

    def erp_mask(self, aligned: AlignedFaces, candidates: Tensor, finite: Tensor, height: int) -> Tensor:
        """[height, 2 height] bool sky mask from the aligned faces (see the module docstring).

        Per ERP pixel, over the faces that see it (border-weighted): ``share_low``, the share of non-candidate faces
        whose aligned inverse distance is ~0 or not positive; ``share_cand``, the share of raw candidates; and, over
        the candidate faces, the mean and relative spread of their aligned inverse distance (each face's map averaged
        over 5 x 5 pixels first, so per-pixel noise does not count as disagreement). Sky: mostly non-candidates and
        ``share_low >= vote_threshold``; or mostly candidates whose aligned values are ~0 or disagree (relative spread
        > ``spread_threshold``): the floor value a network gives the sky maps to each face's own shift, while a far
        surface at a face's floor still maps to one common inverse distance.
        """
        inv = aligned.inv_distance
        surface = aligned.valid & ~candidates
        # the median of inv[surface] (finite there), without gathering the surface pixels
        ref = torch.where(surface, inv, float("nan")).nanmedian() if bool(surface.any()) else inv.new_tensor(1.0)
        level = self.aligned_threshold * ref
        boxes = self._samples(aligned, height)
        # the per-face maps built one face at a time into one buffer, splatted before the next (the stack of all
        # faces' maps, [F, 7, S, S], was ~150 MB of fresh memory a call at 20 faces of 512 px)
        has_cand = bool(candidates.any())
        S = inv.shape[-1]
        buf = inv.new_empty(7 if has_cand else 4, S, S)
        fin, non, low = buf[0], buf[1], buf[2]
        x, x_fill = inv.new_empty(S, S), inv.new_zeros(())

        def face_maps(f: int) -> Tensor:
            fin.copy_(finite[f])
            torch.where(torch.isfinite(inv[f]), inv[f], x_fill, out=x)
            if has_cand:
                cand = buf[3]
                cand.copy_(candidates[f] & finite[f])
                torch.sub(fin, cand, out=non)
                torch.mul(cand, x, out=buf[6])  # scratch: x * cand for the 5 x 5 mean
                num = F.avg_pool2d(F.pad(buf[6][None, None], (2, 2, 2, 2), mode="replicate"), 5, stride=1)[0, 0]
                den = F.avg_pool2d(F.pad(cand[None, None], (2, 2, 2, 2), mode="replicate"), 5, stride=1)[0, 0]
                xs = num.div_(den.clamp_min_(1e-12))
                torch.mul(cand, xs, out=buf[4])
                torch.mul(buf[4], xs, out=buf[5])
            else:
                non.copy_(fin)  # fin - 0
            low.copy_(~(inv[f] > level)).mul_(non)
            torch.mul(fin, x, out=buf[-1])
            return buf

        if has_cand:
            erp, _ = boxes_to_erp(face_maps, boxes)
        else:  # no raw candidate: the candidate channels are 0 everywhere (what splatting zeros gives)
            part, _ = boxes_to_erp(face_maps, boxes)
            zero = torch.zeros_like(part[0])
            erp = torch.stack((part[0], part[1], part[2], zero, zero, zero, part[3]))
        if self.smooth_px > 0:
            r = self.smooth_px
            e = pad_erp(erp[None], r)
            erp = F.avg_pool2d(e, 2 * r + 1, stride=1)[0]
        seen, non_w, low_w, cand_w = erp[0], erp[1], erp[2], erp[3]
        tiny = 1e-12
        share_low = low_w / non_w.clamp_min(tiny)
        mean = erp[4] / cand_w.clamp_min(tiny)
        spread = (erp[5] / cand_w.clamp_min(tiny) - mean * mean).clamp_min(0).sqrt() / mean.abs().clamp_min(tiny)
        mostly_non = non_w >= 0.5 * seen
        sky_non = mostly_non & (share_low >= self.vote_threshold)
        sky_cand = ~mostly_non & (cand_w > 0) & ((mean <= level) | (spread > self.spread_threshold))
        sky = (seen > 1e-6) & (sky_non | sky_cand)
        # blurred edges: a pixel next to the sky whose inverse distance is well below its surface neighbours' is a
        # mixture of sky and surface (networks smear depth edges): sky
        blend = erp[6] / seen.clamp_min(tiny)
        for _ in range(self.edge_iterations):
            surf = torch.where(sky, torch.zeros_like(blend), blend)[None, None]
            surf = pad_erp(surf, 1)
            near_max = F.max_pool2d(surf, 3, stride=1)[0, 0]
            s = pad_erp(sky[None, None].to(blend.dtype), 1)
            touches = F.max_pool2d(s, 3, stride=1)[0, 0] > 0
            grow = touches & ~sky & (seen > 1e-6) & (blend < self.edge_ratio * near_max)
            if not bool(grow.any()):
                break
            sky = sky | grow
        return sky

    def align(self, alignment, pred: FacePredictions, height: int, width: int) -> tuple[AlignedFaces, Tensor, dict]:
        """Align ``pred`` with ``alignment`` leaving the sky out.

        Args:
            alignment: an :class:`~modules.fusion.alignment.Alignment`.
            pred: the raw face predictions (may hold NaN / inf).
            height, width: output ERP size.
        Returns:
            aligned faces (sky pixels invalid), sky [height, width] bool, a report.
        """
        pred, finite = sanitize_predictions(pred)
        if not self.enabled:
            return alignment.align(pred), torch.zeros(height, width, dtype=torch.bool, device=pred.disparity.device), {}
        level = face_levels(pred.disparity)
        candidates = self.raw_candidates(pred, level=level) & finite
        h = min(height, self.detect_height)
        far = self.raw_candidates(pred, self.first_pass_threshold, level) & finite
        masked = FacePredictions(pred.disparity, torch.where(far, torch.zeros_like(pred.confidence),
                                                              pred.confidence), pred.cameras)
        aligned = alignment.align(masked)
        sky_small = self.erp_mask(aligned, candidates, finite, h)
        report = {"raw_candidates": int(candidates.count_nonzero()) / candidates.numel()}  # no float64 copy
        face_sky = candidates | (self._to_faces(sky_small, pred) if bool(sky_small.any()) else candidates)
        if self.realign or not bool(sky_small.any()):
            # the final alignment uses every pixel but the sky and the raw floor (the first pass left out more)
            masked = FacePredictions(pred.disparity, torch.where(face_sky, torch.zeros_like(pred.confidence),
                                                                  pred.confidence), pred.cameras)
            aligned = alignment.align(masked)
            if bool(sky_small.any()):
                sky_small = self.erp_mask(aligned, candidates, finite, h)
        sky = sky_small
        if (h, 2 * h) != (height, width):
            sky = F.interpolate(sky_small[None, None].float(), size=(height, width), mode="nearest")[0, 0] > 0.5
        face_sky = self._to_faces(sky_small, pred)
        aligned = AlignedFaces(aligned.inv_distance, aligned.valid & ~face_sky & finite, aligned.confidence,
                               aligned.cameras, {**aligned.info, "sky": report})
        report["sky_fraction"] = int(sky.count_nonzero()) / sky.numel()
        return aligned, sky, report

    @staticmethod
    def _to_faces(sky: Tensor, pred: FacePredictions) -> Tensor:
        """ERP mask [h, 2h] -> [F, S, S] bool (bilinear share > 0.5)."""
        if not bool(sky.any()):  # no sky: no face pixel is (what the resampling of zeros gives)
            return torch.zeros(pred.disparity.shape, dtype=torch.bool, device=pred.disparity.device)
        cams = pred.cameras.to(pred.disparity.device, pred.disparity.dtype)
        return erp_to_faces(sky.to(pred.disparity.dtype)[None, None], cams, antialias=False)[0, :, 0] > 0.5

    def finish(self, distance: Tensor, confidence: Tensor, sky: Tensor, image: Tensor | None = None,
               cameras: TangentCameras | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The final sky mask of the output and the surfaces next to it: ``sky`` with its boundary snapped to
        ``image`` (the panorama [3, H, W], when given and ``image_band`` > 0; :meth:`_snap_to_image`), plus pixels
        beyond ``far_limit`` x the median surface distance; the surface pixels within ``edge_band`` x the face width of it
        freed of the sky's share in their disparity (:func:`~modules.fusion.sky_edges.extend_surfaces_to_sky`; needs
        ``cameras``, the faces the band is measured in); then :meth:`apply`. distance, confidence, sky: [H, W].
        Returns distance, confidence and the mask (with ``image_both_ways``, pixels given back to the surfaces keep
        the blend's distance, filled from their neighbours, and its confidence)."""
        if image is not None and self.image_band > 0 and self.enabled:
            sky = self._snap_to_image(sky, image.to(sky.device))
        if self.far_limit is not None:
            surface = ~sky & torch.isfinite(distance) & (distance > 0)
            if bool(surface.any()):
                sky = sky | (surface & (distance > self.far_limit * distance[surface].median()))
        band = self.edge_band_pixels(cameras, distance.shape[0]) if self.enabled else 0
        if band > 0 and bool(sky.any()):
            # a surface pixel kept out of the sky has at most ~1 - edge_ratio of the sky's share
            max_gain = 1.0 / self.edge_ratio if self.edge_ratio > 0 else float("inf")
            inv = extend_surfaces_to_sky(1.0 / distance, sky, band, self.edge_grazing, max_gain, self.edge_noise)
            distance = torch.where(sky, distance, 1.0 / inv)
        return (*self.apply(distance, confidence, sky), sky)

    def edge_band_pixels(self, cameras: TangentCameras | None, height: int) -> int:
        """``edge_band`` (a fraction of the faces' width) in pixels of an ERP map ``height`` rows tall, measured at
        the face centre, the coarsest of the set (0 without cameras). The networks see every face at their own input
        size, so the blur of their depth edges is a fixed share of the face, whatever its pixel count."""
        if cameras is None or self.edge_band <= 0:
            return 0
        # S pixels of 2 tan(fov / 2) / S radians each at the face centre
        face_width = float((2.0 * cameras.tan_half_fov).max())
        return int(round(self.edge_band * face_width / (math.pi / height)))

    def _snap_to_image(self, sky: Tensor, image: Tensor) -> Tensor:
        """:func:`~modules.fusion.sky_edges.snap_sky_to_image` at ``detect_height`` (where the mask was found; the
        image area-averaged to it), its changes carried to the output size (nearest): band and window are pixels
        there, and the cost stays that of a 256-row map (a full 2048x1024 pass took ~1 s on 2 CPU cores).
        sky: [H, W] bool; image: [3, H, W]."""
        H, W = sky.shape
        h = min(self.detect_height, H)
        if h == H:
            return snap_sky_to_image(sky, image, self.image_band, self.image_window, self.image_both_ways)
        w = (W * h) // H
        small = F.interpolate(sky[None, None].float(), size=(h, w), mode="area")[0, 0] > 0.5
        img = F.interpolate(image[None].float(), size=(h, w), mode="area")[0]
        snapped = snap_sky_to_image(small, img, self.image_band, self.image_window, self.image_both_ways)

        def up(mask: Tensor) -> Tensor:
            return F.interpolate(mask[None, None].float(), size=(H, W), mode="nearest")[0, 0] > 0.5

        out = sky | up(snapped & ~small)
        return out & ~up(small & ~snapped) if self.image_both_ways else out

    @staticmethod
    def apply(distance: Tensor, confidence: Tensor, sky: Tensor) -> tuple[Tensor, Tensor]:
        """The output contract: distance +inf and confidence 0 where ``sky``."""
        return (torch.where(sky, torch.full_like(distance, float("inf")), distance),
                torch.where(sky, torch.zeros_like(confidence), confidence))
