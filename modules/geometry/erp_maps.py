"""ERP scalar maps (distance, confidence, corrections): validity, checks, resizing with longitude wrap-around.

Pure tensor functions; device and dtype follow the inputs. Pixel (u, v) has its centre at ((u + 0.5) / W,
(v + 0.5) / H) (docs/architecture.md conventions).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

__all__ = ["InvalidDistanceError", "valid_distance_mask", "check_distance_map", "resize_map", "pad_erp"]


def pad_erp(x: Tensor, r: int) -> Tensor:
    """x [N, C, H, W] padded by r pixels on every side the way an ERP map continues: columns wrap around (longitude),
    rows repeat the edge row (the poles). For neighbourhood filters that must see across the +-180 degree seam."""
    return F.pad(F.pad(x, (r, r, 0, 0), mode="circular"), (0, 0, r, r), mode="replicate")


class InvalidDistanceError(UserError, ValueError):
    """A distance map that cannot be turned into geometry (wrong shape, no valid pixel)."""


def valid_distance_mask(distance: Tensor) -> Tensor:
    """[H, W] -> [H, W] bool: finite and strictly positive pixels."""
    return torch.isfinite(distance) & (distance > 0)


def check_distance_map(distance: Tensor, name: str = "distance") -> Tensor:
    """Validate an ERP distance map and return its valid-pixel mask.

    Args:
        distance: [H, W] floating tensor; NaN, inf and values <= 0 mark invalid pixels.
        name: how to call the map in error messages (e.g. a file path).
    Returns:
        [H, W] bool mask of valid pixels.
    Raises:
        InvalidDistanceError: not 2-D, not floating point, too small, or without a single valid pixel.
    """
    if not isinstance(distance, Tensor):
        raise InvalidDistanceError(f"{name}: expected a torch.Tensor, got {type(distance).__name__}")
    if distance.ndim != 2:
        raise InvalidDistanceError(f"{name}: expected a 2-D [H, W] distance map, got shape {tuple(distance.shape)}")
    if not distance.is_floating_point():
        raise InvalidDistanceError(f"{name}: expected a floating-point distance map, got {distance.dtype}")
    if distance.shape[0] < 2 or distance.shape[1] < 3:
        raise InvalidDistanceError(f"{name}: distance map {tuple(distance.shape)} is too small (need H >= 2, W >= 3)")
    valid = valid_distance_mask(distance)
    if not bool(valid.any()):
        raise InvalidDistanceError(f"{name}: no valid pixel (every value is NaN, inf or <= 0)")
    return valid


def resize_map(x: Tensor, size: Sequence[int], erp: bool = True) -> Tensor:
    """Bilinear resize of a map with pixel centres at ``(u + 0.5) / W`` (``align_corners=False`` semantics).

    Args:
        x: [H, W].
        size: (H2, W2).
        erp: wrap around in longitude (columns) instead of clamping at the left/right borders.
    Returns:
        [H2, W2], same dtype/device.
    """
    H2, W2 = int(size[0]), int(size[1])
    if tuple(x.shape) == (H2, W2):
        return x
    H, W = x.shape
    src = x[None, None].float() if not x.is_floating_point() else x[None, None]
    if not erp:
        return F.interpolate(src, size=(H2, W2), mode="bilinear", align_corners=False)[0, 0]
    padded = torch.cat((src[..., -1:], src, src[..., :1]), dim=-1)  # [1, 1, H, W + 2]
    u = (torch.arange(W2, device=x.device, dtype=src.dtype) + 0.5) * (W / W2) - 0.5 + 1.0  # padded column
    v = (torch.arange(H2, device=x.device, dtype=src.dtype) + 0.5) * (H / H2) - 0.5
    gx = (u + 0.5) / (W + 2) * 2.0 - 1.0
    gy = (v + 0.5) / H * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # [1, H2, W2, 2]
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
