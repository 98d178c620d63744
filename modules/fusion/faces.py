"""What the fusion stages pass around: per-face predictions and their aligned inverse distance."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..geometry.cache import ValueCache
from ..geometry.tangent import TangentCameras, face_cos_to_axis

#: cos(angle to the axis) of every face pixel per camera set (by value): from_affine runs several times a panorama
_COS = ValueCache(max_entries=4)


def _face_cos(cameras: TangentCameras, device: torch.device, dtype: torch.dtype) -> Tensor:
    cams = cameras.to(device, dtype)
    return _COS.get(("face_cos", *cams.cache_key()), lambda: face_cos_to_axis(cams))

__all__ = ["FacePredictions", "AlignedFaces"]


@dataclass
class FacePredictions:
    """Relative disparity of every face, as the predictor returned it.

    Attributes:
        disparity: [F, S, S] (unknown positive scale and shift per face).
        confidence: [F, S, S] in [0, 1].
        cameras: the F face cameras.
    """

    disparity: Tensor
    confidence: Tensor
    cameras: TangentCameras

    def __post_init__(self) -> None:
        Fn, S = self.cameras.num_faces, self.cameras.size
        for name in ("disparity", "confidence"):
            shape = tuple(getattr(self, name).shape)
            if shape != (Fn, S, S):
                raise ValueError(f"{name} has shape {shape}, expected {(Fn, S, S)}")


@dataclass
class AlignedFaces:
    """Inverse distance of every face pixel after alignment, in one common (relative) scale.

    Attributes:
        inv_distance: [F, S, S]; only meaningful where ``valid``.
        valid: [F, S, S] bool: the aligned value is finite and positive and the face was kept.
        confidence: [F, S, S] in [0, 1].
        cameras: the F face cameras.
        info: what the solver reports (per-face scale/shift, iterations, dropped faces ...), for meta.json.
    """

    inv_distance: Tensor
    valid: Tensor
    confidence: Tensor
    cameras: TangentCameras
    info: dict = field(default_factory=dict)

    @staticmethod
    def from_affine(pred: FacePredictions, scale: Tensor, shift: Tensor, keep: Tensor, info: dict) -> "AlignedFaces":
        """inv_distance = cos(angle to axis) * (scale_f * disparity + shift_f); scale/shift/keep: [F] or [F, S, S]."""
        dtype = pred.disparity.dtype
        if scale.dim() == 1:
            scale, shift, keep = scale[:, None, None], shift[:, None, None], keep[:, None, None]
        # in place into one [F, S, S] buffer (each fresh full-size temporary costs page faults on the CPU)
        inv = torch.mul(pred.disparity, scale.to(dtype)).add_(shift.to(dtype))
        inv.mul_(_face_cos(pred.cameras, pred.disparity.device, dtype))
        valid = inv > 0  # finite and positive: NaN and -inf fail > 0, +inf fails < inf
        valid &= inv < float("inf")
        valid &= keep
        return AlignedFaces(inv, valid, pred.confidence, pred.cameras, info)
