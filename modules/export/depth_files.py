"""Distance maps on disk: float32 .npy, 16-bit PNG with its unit, a colour preview, and meta.json.

16-bit PNG encoding: ``distance = value * unit`` with ``value`` in 1..65535 and 0 meaning "no valid distance". The unit
is fixed by config (e.g. 0.001 for millimetres with metric output) or, when null, chosen per image as
``max distance / 65535``; meta.json records it under ``distance_png``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import matplotlib
import numpy as np
from PIL import Image
from torch import Tensor

from .atomic import atomic_path, write_json  # noqa: F401  (write_json: the one JSON writer, re-exported)

__all__ = ["write_npy", "write_distance_png", "read_distance_png", "colorize", "write_preview", "write_json",
           "write_sky_mask"]

log = logging.getLogger(__name__)


def write_npy(path: str | os.PathLike, array: Tensor | np.ndarray, dtype: str = "float32") -> None:
    arr = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr.astype(dtype, copy=False))


def write_distance_png(
    path: str | os.PathLike, distance: Tensor | np.ndarray, unit: float | None = None, compress_level: int = 1
) -> dict[str, Any]:
    """Write [H, W] distances as a 16-bit grayscale PNG; returns the encoding for meta.json."""
    d = distance.detach().cpu().numpy() if isinstance(distance, Tensor) else np.asarray(distance)
    valid = np.isfinite(d) & (d > 0)
    if unit is None:
        top = float(np.max(d, where=valid, initial=-np.inf)) if valid.any() else 1.0  # = d[valid].max(), no gather
        unit = top / 65535.0
    if not unit > 0:
        raise ValueError(f"distance PNG unit must be positive, got {unit}")
    # round(d / unit) where valid, 0 elsewhere, in place in one buffer
    value = np.where(valid, d, 0)
    value /= unit
    np.round(value, out=value)
    clipped = int(((value > 65535) & valid).sum())
    if clipped:
        log.warning("%s: %d pixels beyond 65535 x unit were clipped", path, clipped)
    np.clip(value, 0, 65535, out=value)
    value[valid & (value < 1)] = 1
    with atomic_path(path) as tmp:
        Image.fromarray(value.astype(np.uint16)).save(tmp, format="PNG", compress_level=int(compress_level))
    return {"unit": float(unit), "formula": "distance = value * unit", "invalid_value": 0, "clipped_pixels": clipped}


def read_distance_png(path: str | os.PathLike, unit: float) -> np.ndarray:
    """Inverse of :func:`write_distance_png`: float32 [H, W], NaN where the value is 0."""
    value = np.asarray(Image.open(path), dtype=np.float32)
    return np.where(value > 0, value * unit, np.nan).astype(np.float32)


def colorize(distance: Tensor | np.ndarray, colormap: str = "turbo", percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """Colour image of inverse distance (near = warm), robustly normalised. Returns [H, W, 3] uint8."""
    d = distance.detach().cpu().numpy() if isinstance(distance, Tensor) else np.asarray(distance)
    valid = np.isfinite(d) & (d > 0)
    inv = np.where(valid, 1.0 / np.where(valid, d, 1.0), np.nan)
    if valid.any():
        lo, hi = np.percentile(inv[valid], percentiles)
    else:
        lo, hi = 0.0, 1.0
    x = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    # the colormap's own lookup (what cmap(x) does for floats: row int(x N), x = 1 -> N - 1), converted to bytes
    # once per table row instead of per pixel
    cmap = matplotlib.colormaps[colormap]
    lut = (cmap(np.arange(cmap.N))[:, :3] * 255 + 0.5).astype(np.uint8)
    index = np.nan_to_num(x) * cmap.N
    index[index == cmap.N] = cmap.N - 1
    rgb = np.take(lut, index.astype(np.intp), axis=0)  # what lut[index] gives, 5x faster
    rgb[~valid] = 0
    return rgb


def write_preview(path: str | os.PathLike, distance: Tensor | np.ndarray, colormap: str = "turbo",
                  percentiles: tuple[float, float] = (2, 98), compress_level: int = 1) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(colorize(distance, colormap, percentiles)).save(tmp, format="PNG", compress_level=int(compress_level))


def write_sky_mask(path: str | os.PathLike, distance: Tensor | np.ndarray, compress_level: int = 1) -> None:
    """8-bit PNG [H, W]: 255 where the ray meets no surface (distance +inf: sky, infinity), 0 elsewhere."""
    d = distance.detach().cpu().numpy() if isinstance(distance, Tensor) else np.asarray(distance)
    mask = np.where(np.isposinf(d), 255, 0).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG", compress_level=int(compress_level))
