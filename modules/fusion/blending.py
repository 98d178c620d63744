"""Blending aligned faces into the ERP grid: distance and confidence.

Every ERP pixel takes the weighted mean of the inverse distance of every face that sees it (weights fall to zero at
face borders, times the predictors' confidence). Its confidence measures how well the faces agree there:
``exp(-(relative spread of the faces' inverse distances / agreement_tau)^2)`` (the weighted std over the mean,
about the std of log inverse distance) times the blended predictor confidence;
a pixel seen by a single face gets ``single_face_confidence`` instead of an agreement. Pixels that no face sees
with a valid value are filled from their neighbours (3x3 averaging, then a mean pyramid; longitude wrapping) and get
confidence 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.erp_maps import pad_erp, resize_map
from ..geometry.face_boxes import FaceBoxes, cached_erp_face_boxes, splat_boxes
from ..geometry.spherical import erp_pixel_to_direction
from ..geometry.tangent import FaceSamples, cached_erp_face_samples, sample_faces
from ..geometry.cache import DiskCache, ValueCache
from .faces import AlignedFaces

__all__ = ["Blender", "fill_holes", "edge_geometry"]


def edge_geometry(samples: FaceSamples, tan_half_fov: Tensor, R_world_from_face: Tensor) -> dict[str, Tensor]:
    """Where each sample's two forward ERP edges lie in its face.

    For the sample of ERP pixel (u, v) in face f: the horizontal edge to (u + 1 mod W, v) and the vertical edge to
    (u, v + 1). Returns, for axis in ("x", "y"): ``mid_<axis>`` [N, 2] face plane coordinates of the edge midpoint,
    ``step_<axis>`` [N, 2] the plane-coordinate displacement from the pixel to its neighbour, ``ok_<axis>`` [N] bool
    (the neighbour is inside the face image too, and for y it exists).
    """
    H, W = samples.height, samples.width
    v = torch.div(samples.erp_index, W, rounding_mode="floor").to(samples.face_xy.dtype)
    u = (samples.erp_index % W).to(samples.face_xy.dtype)
    R = R_world_from_face[samples.face_index]  # [N, 3, 3]
    t = tan_half_fov[samples.face_index]

    def plane(du: float, dv: float) -> tuple[Tensor, Tensor]:
        d = erp_pixel_to_direction(u + du, v + dv, H, W)
        cam = torch.einsum("nij,ni->nj", R, d)
        xy = cam[:, :2] / (cam[:, 2:3] * t[:, None])
        return xy, (cam[:, 2] > 0) & (xy.abs() < 1).all(1)

    out = {}
    for axis, (du, dv) in {"x": (1.0, 0.0), "y": (0.0, 1.0)}.items():
        end, inside = plane(du, dv)
        mid, _ = plane(0.5 * du, 0.5 * dv)
        ok = inside & ((v < H - 1) if axis == "y" else torch.ones_like(inside))
        out[f"mid_{axis}"] = mid
        out[f"step_{axis}"] = end - samples.face_xy
        out[f"ok_{axis}"] = ok
    return out


#: exact 3 x 3 neighbour-averaging rounds before the rest of a hole is filled from a pyramid
_LOCAL_FILL_ROUNDS = 2


def fill_holes(values: Tensor, valid: Tensor, max_iterations: int = 512) -> Tensor:
    """Fill invalid pixels of an ERP map from their valid neighbours (columns wrap around).

    The first rounds average the valid 3 x 3 neighbours (a one-pixel hole takes the mean of its neighbours); what is
    left of larger holes (the sky, unseen regions) is filled coarse-to-fine from a mean pyramid of the valid pixels
    (push-pull: linear in the number of pixels, where repeated 3 x 3 averaging cost a full-size convolution per pixel
    of hole depth), down to holes ``max_iterations`` pixels deep.

    Args:
        values: [H, W]; valid: [H, W] bool.
    Returns:
        [H, W] with every pixel finite if any pixel is valid (holes deeper than ``max_iterations`` keep the mean of
        the valid values).
    """
    if bool(valid.all()):
        return values
    v = torch.where(valid, values, torch.zeros_like(values))[None, None]
    m = valid.to(values.dtype)[None, None]
    filled = m.clone()
    for _ in range(min(max_iterations, _LOCAL_FILL_ROUNDS)):
        if bool(filled.all()):
            break
        s = _box3(v * filled)
        n = _box3(filled)
        grow = (filled == 0) & (n > 0)
        v = torch.where(grow, s / n.clamp_min(1e-12), v)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    if max_iterations > _LOCAL_FILL_ROUNDS and not bool(filled.all()):
        levels = max(1, math.ceil(math.log2(max(max_iterations - _LOCAL_FILL_ROUNDS, 1))))
        v, filled = _pyramid_fill(v, filled, levels)
    out = v[0, 0]
    if not bool(filled.all()):
        out = torch.where(filled[0, 0] > 0, out, values[valid].mean())
    return out


def _box3(x: Tensor) -> Tensor:
    """Sums over 3 x 3 neighbourhoods of x [1, 1, H, W] (columns wrap, rows replicate at the poles), by shifted adds
    (a one-channel conv2d is far slower on the CPU)."""
    p = pad_erp(x, 1)
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _pyramid_fill(v: Tensor, m: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """Holes of v [1, 1, H, W] (m: 1 where known, else 0) filled from a 2 x 2 mean pyramid of the known pixels,
    at most ``levels`` levels deep. Returns (v, m) with m 1 wherever a value was found."""
    if levels <= 0 or bool(m.all()) or min(v.shape[-2:]) < 2:
        return v, m
    H, W = v.shape[-2:]
    vs = F.avg_pool2d(v * m, 2, ceil_mode=True)
    ms = F.avg_pool2d(m, 2, ceil_mode=True)
    coarse = torch.where(ms > 0, vs / ms.clamp_min(1e-12), torch.zeros_like(vs))
    coarse, cm = _pyramid_fill(coarse, (ms > 0).to(m.dtype), levels - 1)
    # bilinear upsampling with the longitude wrapping (one circular column each side)
    wrapped = torch.cat((coarse[..., -1:], coarse, coarse[..., :1]), -1)
    wm = torch.cat((cm[..., -1:], cm, cm[..., :1]), -1)
    size = (2 * coarse.shape[-2], 2 * wrapped.shape[-1])
    up = F.interpolate(wrapped * wm, size=size, mode="bilinear", align_corners=False)[..., :H, 2:2 + W]
    upm = F.interpolate(wm, size=size, mode="bilinear", align_corners=False)[..., :H, 2:2 + W]
    hole = (m == 0) & (upm > 1e-6)
    v = torch.where(hole, up / upm.clamp_min(1e-12), v)
    return v, torch.where(hole, torch.ones_like(m), m)


class Blender:
    """Weighted blend of aligned faces into an ERP distance map with a confidence map.

    Args:
        weight_power: exponent of the face border weight (higher = faces fade out sooner toward their borders).
        agreement_tau: relative spread across faces at which the agreement confidence falls to 1/e.
        single_face_confidence: confidence of a pixel only one face sees.
        fill_iterations: how far (pixels) holes are filled from their neighbours.
        max_height: outputs taller than this are blended at this height and upsampled bilinearly (inverse distance
            and confidence, longitude wrapping); None: always at the output size. The faces resolve far fewer rows
            than a 4K-8K panorama has (a 512 px face of the default icosahedron spans 0.45 degrees per pixel at its
            centre: ~400 rows), and a full-size ERP <- face table of a 7680x3840 panorama alone would take ~5 GB.
        cache_dir: folder in which the ERP <- face boxes (and tables, when built) are kept between processes, keyed
            by value (:class:`~modules.geometry.cache.DiskCache`; ~230 MB for 2048x1024); None: off.
    """

    def __init__(
        self,
        weight_power: float = 1.0,
        agreement_tau: float = 0.05,
        single_face_confidence: float = 0.5,
        fill_iterations: int = 512,
        max_height: int | None = 1024,
        cache_dir: str | None = None,
    ):
        if max_height is not None and int(max_height) < 8:
            raise ValueError(f"fusion.blender.max_height must be >= 8 or null, got {max_height}")
        self.max_height = None if max_height is None else int(max_height)
        self.weight_power = float(weight_power)
        self.agreement_tau = float(agreement_tau)
        self.single_face_confidence = float(single_face_confidence)
        self.fill_iterations = int(fill_iterations)
        #: derived geometry by value (the pipeline replaces it with the one it owns)
        self.cache = ValueCache()
        #: ERP <- face tables kept between processes (``cache_dir``; None: off)
        self.disk = None if cache_dir is None else DiskCache(cache_dir)

    def _geometry(self, faces: AlignedFaces, height: int, width: int) -> dict:
        """Everything that depends only on the cameras and the ERP size, cached for repeated panoramas and filled on
        first use: the boxes (splatting), the samples (the gradient targets of :meth:`log_gradients`), per-pixel sums
        and edge geometry."""
        cams = faces.cameras
        device = faces.inv_distance.device
        key = ("blending", self.weight_power, *cams.cache_key(), str(device), height, width)
        geometry = self.cache.get(key, lambda: {"cameras": cams.to(device)})
        return geometry

    def samples(self, faces: AlignedFaces, height: int, width: int) -> FaceSamples:
        """ERP <- face correspondences at the given size (cached; built on first use: blending itself splats by
        :meth:`boxes`)."""
        geometry = self._geometry(faces, height, width)
        if "samples" not in geometry:
            geometry["samples"] = cached_erp_face_samples(geometry["cameras"], height, width, self.weight_power,
                                                          self.disk, self.cache)
        return geometry["samples"]

    def boxes(self, faces: AlignedFaces, height: int, width: int) -> FaceBoxes:
        """Each face's ERP box with its plane coordinates and border weights at the given size (cached): what
        :meth:`blend` splats with (:mod:`modules.geometry.face_boxes`)."""
        geometry = self._geometry(faces, height, width)
        if "boxes" not in geometry:
            geometry["boxes"] = cached_erp_face_boxes(geometry["cameras"], height, width, self.weight_power,
                                                      self.disk, self.cache)
        return geometry["boxes"]

    def blend(self, faces: AlignedFaces, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Returns distance [H, W] (positive, finite) and confidence [H, W] in [0, 1] (blended at ``max_height``
        rows and upsampled when H is larger)."""
        if self.max_height is None or height <= self.max_height:
            return self._blend(faces, height, width)
        h = self.max_height
        distance, confidence = self._blend(faces, h, (width * h) // height)
        inv = resize_map(1.0 / distance, (height, width), erp=True)
        return 1.0 / inv, resize_map(confidence, (height, width), erp=True).clamp(0, 1)

    def _blend(self, faces: AlignedFaces, height: int, width: int) -> tuple[Tensor, Tensor]:
        """:meth:`blend` at the given size."""
        boxes = self.boxes(faces, height, width)
        inv = faces.inv_distance
        # premultiplied channels q, q inv, q inv^2 (q: how much each face pixel counts): bilinear sampling then acts
        # as normalised convolution (invalid pixels drop out); written in place, [F, 3, S, S]
        maps = torch.empty(inv.shape[0], 3, *inv.shape[1:], dtype=inv.dtype, device=inv.device)
        q = torch.mul(faces.valid.to(inv.dtype), faces.confidence.clamp(0, 1), out=maps[:, 0])
        torch.mul(q, inv, out=maps[:, 1])
        torch.mul(maps[:, 1], inv, out=maps[:, 2])
        acc = splat_boxes(maps, boxes)  # [3, P] weighted sums over the faces seeing each pixel
        geo, seen_once = boxes.weight_sum, boxes.count < 2  # [P] border-weight sum, [P] pixels only one face sees
        q_sum = acc[0]
        tiny = torch.finfo(q_sum.dtype).tiny
        # [P] maps computed in place where a temporary is not needed (each fresh one costs page faults on the CPU)
        geo_c, q_c = geo.clamp_min(tiny), q_sum.clamp_min(tiny)
        valid = q_sum > geo_c * 1e-6
        inv_blend = acc[1] / q_c
        # spread of the faces' inverse distances relative to their mean (~ std of log inverse distance)
        var_log = torch.div(acc[2], q_c).div_(torch.mul(inv_blend, inv_blend).clamp_min_(tiny)).sub_(1.0).clamp_min_(0)
        agreement = torch.exp(var_log.neg_().div_(self.agreement_tau**2))
        agreement.masked_fill_(seen_once, self.single_face_confidence)
        valid &= torch.isfinite(inv_blend)
        valid &= inv_blend > 0
        invalid = ~valid
        confidence = agreement.mul_(torch.div(q_sum, geo_c, out=q_c).clamp_(0, 1)).masked_fill_(invalid, 0.0)
        if not bool(valid.any()):
            raise RuntimeError("blending produced no valid pixel: every face prediction was invalid")
        distance = inv_blend.clamp_min_(tiny).reciprocal_().masked_fill_(invalid, 0.0)  # 1 / x as 1.0 / x computes it
        distance = fill_holes(distance.view(height, width), valid.view(height, width), self.fill_iterations)
        return distance, confidence.view(height, width)

    def log_gradients(self, faces: AlignedFaces, height: int, width: int,
                      blend: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """The blended log-distance and the faces' own log-distance differences across ERP edges, blended.

        Each face's log-distance is differentiated in its own image (central differences), so a face contributes
        seam-free gradients; the difference across the edge from pixel (u, v) to (u + 1 mod W, v) is the face
        gradient at the edge's midpoint times the edge's step in the face (exact for fields linear in the face),
        and likewise for (u, v) -> (u, v + 1). Faces are weighted as in :meth:`blend`.

        Args:
            blend: :meth:`blend`'s (distance, confidence) at this size when the caller has it (not blended again).
        Returns:
            ``log_distance`` [H, W] (log of :meth:`blend`'s distance), ``gx``/``gy`` [H, W] target differences,
            ``wx``/``wy`` [H, W] edge weights in [0, 1] (0: no face saw the edge), ``confidence`` [H, W].
        """
        if blend is not None and tuple(blend[0].shape) != (height, width):
            raise ValueError(f"blend is {tuple(blend[0].shape)}, expected ({height}, {width})")
        distance, confidence = blend if blend is not None else self.blend(faces, height, width)
        samples = self.samples(faces, height, width)
        geometry = self._geometry(faces, height, width)
        if "edges" not in geometry:
            cams = faces.cameras.to(samples.face_xy.device, samples.face_xy.dtype)
            edges = edge_geometry(samples, cams.tan_half_fov, cams.R_world_from_face)
            # the samples moved to the edge midpoints (their grouped sampling layout is then cached with them)
            edges["midpoints"] = {
                axis: FaceSamples(samples.erp_index, samples.face_index, edges[f"mid_{axis}"], samples.cos_axis,
                                  samples.weight, height, width, samples.num_faces)
                for axis in ("x", "y")
            }
            geometry["edges"] = edges
        edges = geometry["edges"]
        geo = self.boxes(faces, height, width).weight_sum
        inv, valid = faces.inv_distance, faces.valid
        S = inv.shape[-1]
        log_d = -torch.log(torch.where(valid, inv, torch.ones_like(inv)))  # [F, S, S] log-distance
        q = valid.to(inv.dtype) * faces.confidence.clamp(0, 1)
        # central differences in plane units (xn spans 2 over S pixels), valid where both neighbours are
        pad = torch.nn.functional.pad(log_d[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        qpad = torch.nn.functional.pad(q[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        dx = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) * (S / 4.0)
        dy = (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) * (S / 4.0)
        qx = q * qpad[:, 1:-1, 2:] * qpad[:, 1:-1, :-2]
        qy = q * qpad[:, 2:, 1:-1] * qpad[:, :-2, 1:-1]
        qg = torch.minimum(qx, qy)
        maps = torch.stack((qg, qg * dx, qg * dy), 1)  # premultiplied, as in blend()
        P = height * width
        out = {"log_distance": torch.log(distance), "confidence": confidence}
        for axis in ("x", "y"):
            vals = sample_faces(maps, edges["midpoints"][axis])  # [N, 3] at the edge midpoints
            q_mid = vals[:, 0]
            grad = vals[:, 1:] / q_mid.clamp_min(1e-12)[:, None]
            diff = (grad * edges[f"step_{axis}"]).sum(1)
            w = samples.weight * q_mid * edges[f"ok_{axis}"].to(q_mid.dtype)
            usable = (w > 0) & torch.isfinite(diff)
            w = torch.where(usable, w, torch.zeros_like(w))
            diff = torch.where(usable, diff, torch.zeros_like(diff))
            acc = torch.zeros(P, 2, dtype=w.dtype, device=w.device)
            acc.index_add_(0, samples.erp_index, torch.stack((w, w * diff), 1))
            out[f"g{axis}"] = (acc[:, 1] / acc[:, 0].clamp_min(1e-30)).view(height, width)
            out[f"w{axis}"] = (acc[:, 0] / geo.clamp_min(1e-30)).clamp(0, 1).view(height, width)
        return out
