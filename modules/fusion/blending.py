"""Blending aligned faces into the ERP grid: distance and confidence.

Every ERP pixel takes the weighted mean of the inverse distance of every face that sees it (weights fall to zero at
face borders, times the predictors' confidence). Its confidence measures how well the faces agree there:
``exp(-(std of log inverse distance across faces / agreement_tau)^2)`` times the blended predictor confidence;
a pixel seen by a single face gets ``single_face_confidence`` instead of an agreement. Pixels that no face sees
with a valid value are filled from their neighbours (repeated 3x3 averaging, longitude wrapping) and get confidence 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.tangent import FaceSamples, erp_face_samples, sample_faces
from .faces import AlignedFaces

__all__ = ["Blender", "fill_holes"]


def fill_holes(values: Tensor, valid: Tensor, max_iterations: int = 512) -> Tensor:
    """Fill invalid pixels of an ERP map by repeated 3x3 averaging of valid neighbours (columns wrap around).

    Args:
        values: [H, W]; valid: [H, W] bool.
    Returns:
        [H, W] with every pixel finite if any pixel is valid (remaining holes after ``max_iterations`` keep the
        mean of the valid values).
    """
    if bool(valid.all()):
        return values
    v = torch.where(valid, values, torch.zeros_like(values))[None, None]
    m = valid.to(values.dtype)[None, None]
    kernel = torch.ones(1, 1, 3, 3, dtype=values.dtype, device=values.device)
    filled = m.clone()
    for _ in range(max_iterations):
        if bool(filled.all()):
            break
        vp = F.pad(F.pad(v, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1), mode="replicate")
        mp = F.pad(F.pad(filled, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1), mode="replicate")
        s = F.conv2d(vp * mp, kernel)
        n = F.conv2d(mp, kernel)
        grow = (filled == 0) & (n > 0)
        v = torch.where(grow, s / n.clamp_min(1e-12), v)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    out = v[0, 0]
    if not bool(filled.all()):
        out = torch.where(filled[0, 0] > 0, out, values[valid].mean())
    return out


class Blender:
    """Weighted blend of aligned faces into an ERP distance map with a confidence map.

    Args:
        weight_power: exponent of the face border weight (higher = faces fade out sooner toward their borders).
        agreement_tau: relative spread across faces at which the agreement confidence falls to 1/e.
        single_face_confidence: confidence of a pixel only one face sees.
        fill_iterations: how far (pixels) holes are filled from their neighbours.
    """

    def __init__(
        self,
        weight_power: float = 1.0,
        agreement_tau: float = 0.05,
        single_face_confidence: float = 0.5,
        fill_iterations: int = 512,
    ):
        self.weight_power = float(weight_power)
        self.agreement_tau = float(agreement_tau)
        self.single_face_confidence = float(single_face_confidence)
        self.fill_iterations = int(fill_iterations)
        self._cache: dict = {}

    def samples(self, faces: AlignedFaces, height: int, width: int) -> FaceSamples:
        """ERP <- face correspondences at the output size (cached for repeated panoramas of one size)."""
        cams = faces.cameras
        key = (cams.R_world_from_face.data_ptr(), cams.num_faces, cams.size, height, width, str(faces.inv_distance.device))
        if key not in self._cache:
            self._cache = {key: erp_face_samples(cams.to(faces.inv_distance.device), height, width, self.weight_power)}
        return self._cache[key]

    def blend(self, faces: AlignedFaces, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Returns distance [H, W] (positive, finite) and confidence [H, W] in [0, 1]."""
        samples = self.samples(faces, height, width)
        inv = faces.inv_distance
        q = faces.valid.to(inv.dtype) * faces.confidence.clamp(0, 1)  # how much each face pixel counts
        log_inv = torch.log(torch.where(faces.valid, inv, torch.ones_like(inv)))
        # premultiplied channels: bilinear sampling then acts as normalised convolution (invalid pixels drop out)
        maps = torch.stack((q, q * inv, q * log_inv, q * log_inv * log_inv), 1)  # [F, 4, S, S]
        vals = sample_faces(maps, samples) * samples.weight[:, None]  # [N, 4]
        P = height * width
        acc = torch.zeros(P, 4, dtype=vals.dtype, device=vals.device).index_add_(0, samples.erp_index, vals)
        geo, seen_once = self._geometry_sums(samples)  # [P] border-weight sum, [P] pixels only one face sees
        q_sum = acc[:, 0]
        tiny = torch.finfo(q_sum.dtype).tiny
        valid = q_sum > 1e-6 * geo.clamp_min(tiny)
        inv_blend = acc[:, 1] / q_sum.clamp_min(tiny)
        mean_log = acc[:, 2] / q_sum.clamp_min(tiny)
        var_log = (acc[:, 3] / q_sum.clamp_min(tiny) - mean_log * mean_log).clamp_min(0)
        agreement = torch.exp(-var_log / (self.agreement_tau**2))
        agreement = torch.where(seen_once, torch.full_like(agreement, self.single_face_confidence), agreement)
        valid = valid & torch.isfinite(inv_blend) & (inv_blend > 0)
        conf_pred = (q_sum / geo.clamp_min(tiny)).clamp(0, 1)
        confidence = torch.where(valid, agreement * conf_pred, torch.zeros_like(agreement))
        if not bool(valid.any()):
            raise RuntimeError("blending produced no valid pixel: every face prediction was invalid")
        distance = torch.where(valid, 1.0 / inv_blend.clamp_min(tiny), torch.zeros_like(inv_blend))
        distance = fill_holes(distance.view(height, width), valid.view(height, width), self.fill_iterations)
        return distance, confidence.view(height, width)

    def _geometry_sums(self, samples: FaceSamples) -> tuple[Tensor, Tensor]:
        """Per-pixel sums that depend only on the geometry (cached with the samples)."""
        key = ("sums", id(samples))
        if key not in self._cache:
            P = samples.height * samples.width
            w = torch.zeros(P, dtype=samples.weight.dtype, device=samples.weight.device)
            w.index_add_(0, samples.erp_index, samples.weight)
            self._cache[key] = (w, samples.coverage().view(-1) < 2)
        return self._cache[key]
