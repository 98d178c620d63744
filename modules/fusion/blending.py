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
        log_inv = torch.log(faces.inv_distance.clamp_min(torch.finfo(faces.inv_distance.dtype).tiny))
        maps = torch.stack((log_inv, faces.inv_distance, faces.valid.to(log_inv.dtype), faces.confidence), 1)
        vals = sample_faces(maps, samples.face_index, samples.face_xy)  # [N, 4]
        # a sample counts only if all four face pixels around it are valid
        ok = vals[:, 2] > 1.0 - 1e-6
        w = torch.where(ok, samples.weight * vals[:, 3].clamp(0, 1).clamp_min(1e-3), torch.zeros_like(samples.weight))
        P = height * width
        idx = samples.erp_index

        def wsum(x: Tensor) -> Tensor:
            out = torch.zeros(P, dtype=x.dtype, device=x.device)
            return out.index_add_(0, idx, x)

        w_sum = wsum(w)
        count = wsum(ok.to(w.dtype))
        inv = wsum(w * vals[:, 1]) / w_sum.clamp_min(1e-30)
        mean_log = wsum(w * vals[:, 0]) / w_sum.clamp_min(1e-30)
        var_log = wsum(w * (vals[:, 0] - mean_log[idx]) ** 2) / w_sum.clamp_min(1e-30)
        conf_pred = wsum(samples.weight * vals[:, 3] * ok) / wsum(samples.weight * ok).clamp_min(1e-30)
        agreement = torch.exp(-var_log / (self.agreement_tau**2))
        agreement = torch.where(count > 1.5, agreement, torch.full_like(agreement, self.single_face_confidence))
        valid = (w_sum > 0) & torch.isfinite(inv) & (inv > 0)
        confidence = torch.where(valid, agreement * conf_pred.clamp(0, 1), torch.zeros_like(agreement))
        distance = torch.where(valid, 1.0 / inv.clamp_min(1e-30), torch.zeros_like(inv))
        distance = fill_holes(distance.view(height, width), valid.view(height, width), self.fill_iterations)
        return distance, confidence.view(height, width)
