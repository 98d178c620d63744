"""Network input preparation and output resizing for the DPT-family depth networks (MiDaS v3.1, Depth Anything V2).

Pure tensor functions; device and dtype come from the inputs. Images are float RGB in [0, 1], channels first,
shape [B, 3, h, w]. The size rule follows the upstream ``Resize`` transform shared by MiDaS and Depth Anything:

- ``keep_aspect_ratio=False``: height and width are each scaled to the target size on their own.
- ``keep_aspect_ratio=True``: one scale for both sides, chosen by ``resize_method``:
  ``"minimal"`` scales as little as possible (the side whose scale is nearer 1 wins; MiDaS v3.1),
  ``"lower_bound"`` makes both sides at least the target (Depth Anything V2),
  ``"upper_bound"`` makes both sides at most the target.
- Each side is then rounded to a multiple of ``multiple_of`` (nearest, half to even as numpy does; ``lower_bound``
  rounds up when nearest would fall below the target, ``upper_bound`` rounds down when it would exceed it).

Normalisation is ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RESIZE_METHODS",
    "INTERPOLATION_MODES",
    "constrain_to_multiple_of",
    "network_input_size",
    "normalize_images",
    "prepare_network_input",
    "resize_prediction",
]

RESIZE_METHODS = ("minimal", "lower_bound", "upper_bound")
INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest", "area")


def constrain_to_multiple_of(value: float, multiple: int, min_val: int = 0, max_val: int | None = None) -> int:
    """Round ``value`` to a multiple of ``multiple``; go down if above ``max_val``, up if below ``min_val``."""
    if multiple < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple}")
    y = int(round(value / multiple) * multiple)
    if max_val is not None and y > max_val:
        y = int(math.floor(value / multiple) * multiple)
    if y < min_val:
        y = int(math.ceil(value / multiple) * multiple)
    return y


def network_input_size(
    image_hw: tuple[int, int],
    target_hw: tuple[int, int],
    keep_aspect_ratio: bool,
    multiple_of: int,
    resize_method: str,
) -> tuple[int, int]:
    """Network input (height, width) for an image of ``image_hw`` under the upstream size rule (module header)."""
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}")
    height, width = int(image_hw[0]), int(image_hw[1])
    target_h, target_w = int(target_hw[0]), int(target_hw[1])
    if min(height, width, target_h, target_w) < 1:
        raise ValueError(f"image size {image_hw} and target size {target_hw} must be positive")
    scale_h = target_h / height
    scale_w = target_w / width
    if keep_aspect_ratio:
        if resize_method == "lower_bound":
            scale_h = scale_w = max(scale_h, scale_w)
        elif resize_method == "upper_bound":
            scale_h = scale_w = min(scale_h, scale_w)
        elif abs(1.0 - scale_w) < abs(1.0 - scale_h):  # minimal: fit width
            scale_h = scale_w
        else:  # minimal: fit height
            scale_w = scale_h
    if resize_method == "lower_bound":
        bounds_h, bounds_w = {"min_val": target_h}, {"min_val": target_w}
    elif resize_method == "upper_bound":
        bounds_h, bounds_w = {"max_val": target_h}, {"max_val": target_w}
    else:
        bounds_h, bounds_w = {}, {}
    new_h = constrain_to_multiple_of(scale_h * height, multiple_of, **bounds_h)
    new_w = constrain_to_multiple_of(scale_w * width, multiple_of, **bounds_w)
    if new_h < multiple_of or new_w < multiple_of:
        raise ValueError(
            f"image of size {image_hw} maps to a network input of {(new_h, new_w)}, smaller than one "
            f"{multiple_of}-pixel patch; use a larger image or target size"
        )
    return new_h, new_w


def normalize_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(images - mean) / std`` per channel.

    Args:
        images: [B, 3, H, W] float.
        mean, std: three values each (RGB).
    Returns:
        [B, 3, H, W], same dtype and device.
    """
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"mean/std need {images.shape[1]} values, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}")
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, 3, h, w] tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")


def prepare_network_input(
    images: Tensor,
    size_hw: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resize images to the network input size and normalise them.

    Args:
        images: [B, 3, h, w] float RGB in [0, 1].
        size_hw: (H, W) from :func:`network_input_size`.
        mean, std: per-channel normalisation.
        interpolation: ``bicubic`` (upstream uses cubic) or another ``F.interpolate`` mode.
        antialias: ``F.interpolate``'s antialias (bilinear/bicubic only). It low-passes when shrinking; for bicubic it
            also switches to PIL's kernel (a = -0.5 instead of -0.75), so it changes enlarged images too (by several
            grey levels at edges) and is what matches the PIL-backed transformers processors to within one grey
            level (tests/test_predictors_processors.py). Bilinear enlarging is the same either way.
    Returns:
        [B, 3, H, W] normalised network input, dtype and device of ``images``.
    """
    _check_images(images)
    if interpolation not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation must be one of {INTERPOLATION_MODES}, got {interpolation!r}")
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if tuple(images.shape[-2:]) != size_hw:
        kwargs = {}
        if interpolation in ("bilinear", "bicubic"):
            kwargs = {"align_corners": False, "antialias": antialias}
        images = F.interpolate(images, size=size_hw, mode=interpolation, **kwargs)
    return normalize_images(images, mean, std)


def resize_prediction(prediction: Tensor, size_hw: tuple[int, int], mode: str, align_corners: bool | None) -> Tensor:
    """Resize a per-image map back to the image size.

    Args:
        prediction: [B, H, W] network output.
        size_hw: (h, w) of the original images.
        mode: ``F.interpolate`` mode (MiDaS upstream: bicubic; Depth Anything upstream: bilinear).
        align_corners: passed to ``F.interpolate`` for bilinear/bicubic (Depth Anything upstream: True).
    Returns:
        [B, h, w], dtype of ``prediction``.
    """
    if prediction.ndim != 3:
        raise ValueError(f"prediction must be [B, H, W], got {tuple(prediction.shape)}")
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"output interpolation must be one of {INTERPOLATION_MODES}, got {mode!r}")
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if tuple(prediction.shape[-2:]) == size_hw:
        return prediction
    kwargs = {"align_corners": bool(align_corners)} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(prediction.unsqueeze(1), size=size_hw, mode=mode, **kwargs).squeeze(1)
