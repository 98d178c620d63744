"""The oracle alignment of the stitching benchmark: each face's best map of a family, fitted to the ground truth.

It shows how far a method is from what the predictions allow: with the same predictions, blending and (optional)
refinement, no alignment can do better (in the least-squares sense of the family) than fitting each face to the truth.
Sky pixels (true distance ``inf``) are marked invalid, as a perfect sky detector would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fusion.alignment import Alignment
from ..fusion.disparity_curves import curve_basis, face_levels
from ..fusion.faces import AlignedFaces, FacePredictions
from ..geometry.tangent import erp_to_faces, face_cos_to_axis

__all__ = ["OracleAlignment"]


class OracleAlignment(Alignment):
    """Per face, the polynomial of ``degree`` in disparity (1: affine) that best fits the true inverse distance.

    Args:
        truth: [H, W] ground-truth ERP distance (``inf`` for the sky).
        degree: degree of the per-face map.
    """

    def __init__(self, truth: Tensor, degree: int = 1):
        self.truth = truth
        self.degree = int(degree)

    def describe(self) -> dict:
        return {"name": "oracle", "degree": self.degree}

    def align(self, pred: FacePredictions) -> AlignedFaces:
        d = pred.disparity.double()
        cams = pred.cameras.to(d.device, torch.float64)
        inv_true = erp_to_faces((1.0 / self.truth.to(d.device).double())[None, None], cams, antialias=False)[0, :, 0]
        cos = face_cos_to_axis(cams)
        level = face_levels(d)
        phi = curve_basis(d / level[:, None, None], self.degree)  # [F, S, S, K]
        target = inv_true / cos
        ok = torch.isfinite(d) & torch.isfinite(target) & (target > 0)
        # relative residuals (log-distance-like), bounded where the truth is ~0 (pixels mixed with the sky)
        floor = 0.02 * torch.where(ok, target, torch.full_like(target, float("nan"))).flatten(1).nanmedian(1).values
        w = torch.where(ok, 1.0 / torch.maximum(target, floor[:, None, None]).clamp_min(1e-12), torch.zeros_like(target))
        Fn, K = d.shape[0], self.degree + 1
        A = torch.where(ok[..., None], phi, torch.zeros_like(phi)).reshape(Fn, -1, K) * w.reshape(Fn, -1, 1)
        b = (torch.where(ok, target, torch.zeros_like(target)) * w).reshape(Fn, -1, 1)
        coef = torch.linalg.lstsq(A.transpose(1, 2) @ A + 1e-12 * torch.eye(K, dtype=d.dtype, device=d.device),
                                  A.transpose(1, 2) @ b).solution[..., 0]  # [F, K]
        inv = cos * (torch.nan_to_num(phi) * coef[:, None, None, :]).sum(-1)
        sky = inv_true <= 0
        valid = torch.isfinite(d) & torch.isfinite(inv) & (inv > 0) & ~sky
        dtype = pred.disparity.dtype
        return AlignedFaces(inv.to(dtype), valid, pred.confidence, pred.cameras, {"oracle_degree": self.degree})
