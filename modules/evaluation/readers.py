"""Ground-truth depth / distance readers for evaluation datasets.

Every reader maps a file to ``(values, valid)``: ``values`` float32 [H, W] in metres, ``valid`` bool [H, W]
(invalid pixels hold 0 in ``values``). A reader also says which quantity the file stores (``quantity``):
``"distance"`` (Euclidean length along the ray, what ERP panoramas store) or ``"depth"`` (z in a perspective
camera). Readers are looked up by name in :data:`READERS`; :func:`get_reader` raises a clear error for an
unknown name.

What the public documentation says about each format:

* ``stanford2d3d`` — Stanford 2D-3D-Semantics (Armeni et al. 2017), ``pano/depth/*.png``: 16-bit PNG,
  1/512 m per unit (maximum 128 m), missing values are 65535. Panoramas store the *distance* from the camera
  centre; the dataset's perspective images (``data/depth``) store z-depth (dataset README).
* ``matterport3d`` — Matterport3D (Chang et al. 2017): 16-bit PNG, 0.25 mm per unit (value / 4000 = metres),
  0 = no reading. The dataset's own frames (``undistorted_depth_images``) store z-depth; the panoramas used by
  360 depth work (stitched from those frames with the UniFuse/BiFuse "M3D" preprocessing, PanoBasic) multiply
  by each ray's length before stitching, so they store *distance*, with the same 1/4000 m scale.
* ``structured3d`` — Structured3D (Zheng et al. 2020), ``panorama/<empty|simple|full>/depth.png``: 16-bit PNG in
  millimetres, 0 = no reading (dataset data_organization.md). The docs do not say whether panoramas store depth
  or distance; panoramic depth work back-projects them as distance along the ray, which we follow.
* ``npy`` — a float array [H, W] (or [1, H, W] / [H, W, 1]) in metres; non-finite or <= 0 = invalid.
* ``exr`` — OpenEXR (read with the ``OpenEXR`` package), one channel in metres: the only channel, else the first
  of ``Z``, ``depth``, ``distance``, ``Y``, ``R`` present; non-finite or <= 0 = invalid (Pano3D / 3D60 mark
  holes with ``inf``).

A value of 0 (or below) is never valid ground truth in any format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..extras import require

__all__ = [
    "GroundTruthError",
    "GroundTruthNotFoundError",
    "GroundTruth",
    "UInt16PngReader",
    "NpyReader",
    "ExrReader",
    "READERS",
    "get_reader",
    "read_uint16_png",
    "read_exr_channels",
]

EXR_CHANNEL_PREFERENCE: tuple[str, ...] = ("Z", "depth", "distance", "Y", "R")


class GroundTruthError(UserError, ValueError):
    """A ground-truth file that cannot be used (wrong format), or an unknown format name."""


class GroundTruthNotFoundError(UserError, FileNotFoundError):
    """A ground-truth file that does not exist."""


@dataclass(frozen=True)
class GroundTruth:
    """A decoded ground-truth map.

    Attributes:
        values: [H, W] float32 metres (0 where invalid).
        valid: [H, W] bool.
        quantity: ``"distance"`` or ``"depth"``.
        sky: [H, W] bool where the file holds ``+inf`` (no surface: sky), or None when it has none.
    """

    values: Tensor
    valid: Tensor
    quantity: str
    sky: Tensor | None = None

    def __iter__(self) -> Iterator[Tensor]:
        """Unpacks as ``values, valid = reader(path)``."""
        return iter((self.values, self.valid))


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise GroundTruthNotFoundError(f"ground-truth file not found: {path}")
    return path


def _finish(raw_metres: np.ndarray, invalid: np.ndarray, quantity: str) -> GroundTruth:
    values = np.asarray(raw_metres, dtype=np.float32)
    valid = ~invalid & np.isfinite(values) & (values > 0)
    sky = ~invalid & np.isposinf(values)
    values = np.where(valid, values, np.float32(0.0)).astype(np.float32)
    return GroundTruth(torch.from_numpy(values), torch.from_numpy(valid), quantity,
                       torch.from_numpy(sky) if sky.any() else None)


def read_uint16_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-channel 16-bit PNG without any scaling.

    Returns:
        [H, W] uint16.
    Raises:
        GroundTruthNotFoundError: no such file. GroundTruthError: not a single-channel 16-bit image.
    """
    import cv2

    path = _require_file(path)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise GroundTruthError(f"{path}: cannot be decoded as an image")
    if image.dtype != np.uint16 or image.ndim != 2:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise GroundTruthError(
            f"{path}: expected a single-channel 16-bit PNG depth map, got {image.dtype} with {channels} channel(s)"
        )
    return image


def read_exr_channels(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All channels of an OpenEXR file, each [H, W] float32 (half and uint channels are converted)."""
    OpenEXR = require("OpenEXR", "reading OpenEXR ground truth")

    path = _require_file(path)
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            return {name: np.asarray(ch.pixels, dtype=np.float32) for name, ch in exr.channels().items()}
    except Exception as exc:  # the OpenEXR binding raises plain RuntimeError / Exception on bad files
        raise GroundTruthError(f"{path}: cannot be read as OpenEXR ({exc})") from exc


@dataclass(frozen=True)
class UInt16PngReader:
    """16-bit PNG with a fixed scale: metres = stored value * ``metres_per_unit``.

    Attributes:
        metres_per_unit: e.g. 1/512 (Stanford2D3D), 1/4000 (Matterport3D), 1/1000 (Structured3D).
        invalid_values: stored values that mean "no measurement" (0 is always invalid).
        quantity: ``"distance"`` or ``"depth"``.
    """

    metres_per_unit: float
    invalid_values: tuple[int, ...] = (0,)
    quantity: str = "distance"

    def __call__(self, path: str | os.PathLike) -> GroundTruth:
        raw = read_uint16_png(path)
        invalid = np.isin(raw, np.asarray(self.invalid_values, dtype=np.uint16))
        return _finish(raw.astype(np.float64) * self.metres_per_unit, invalid, self.quantity)


@dataclass(frozen=True)
class NpyReader:
    """``.npy`` float array in metres (times ``metres_per_unit``); [H, W], [1, H, W] or [H, W, 1]."""

    metres_per_unit: float = 1.0
    quantity: str = "distance"

    def __call__(self, path: str | os.PathLike) -> GroundTruth:
        path = _require_file(path)
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise GroundTruthError(f"{path}: not a plain numeric .npy array ({exc})") from exc
        array = np.squeeze(array)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise GroundTruthError(f"{path}: expected a numeric [H, W] array, got {array.dtype} {array.shape}")
        return _finish(array.astype(np.float64) * self.metres_per_unit, np.zeros(array.shape, bool), self.quantity)


@dataclass(frozen=True)
class ExrReader:
    """OpenEXR depth/distance; ``channel=None`` picks the only channel or the first of
    :data:`EXR_CHANNEL_PREFERENCE` present."""

    channel: str | None = None
    metres_per_unit: float = 1.0
    quantity: str = "distance"

    def __call__(self, path: str | os.PathLike) -> GroundTruth:
        channels = read_exr_channels(path)
        name = self._pick(path, channels)
        raw = channels[name].astype(np.float64) * self.metres_per_unit
        return _finish(raw, np.zeros(raw.shape, bool), self.quantity)

    def _pick(self, path: str | os.PathLike, channels: dict[str, np.ndarray]) -> str:
        if self.channel is not None:
            if self.channel not in channels:
                raise GroundTruthError(f"{path}: no channel '{self.channel}'; channels: {sorted(channels)}")
            return self.channel
        if len(channels) == 1:
            return next(iter(channels))
        for name in EXR_CHANNEL_PREFERENCE:
            if name in channels:
                return name
        raise GroundTruthError(
            f"{path}: cannot tell the depth channel among {sorted(channels)}; set the reader's channel"
        )


#: Readers by dataset name (see the module docstring for units and invalid values).
READERS: dict[str, Callable[[str | os.PathLike], GroundTruth]] = {
    "stanford2d3d": UInt16PngReader(metres_per_unit=1.0 / 512.0, invalid_values=(0, 65535), quantity="distance"),
    "matterport3d": UInt16PngReader(metres_per_unit=1.0 / 4000.0, invalid_values=(0,), quantity="distance"),
    "structured3d": UInt16PngReader(metres_per_unit=1.0 / 1000.0, invalid_values=(0,), quantity="distance"),
    "npy": NpyReader(),
    "exr": ExrReader(),
}


def get_reader(name: str, **overrides: Any) -> Callable[[str | os.PathLike], GroundTruth]:
    """The registered reader ``name``, optionally with fields replaced (e.g. ``quantity="depth"`` for the
    perspective frames of a dataset, ``metres_per_unit`` for a custom PNG scale).

    Raises:
        GroundTruthError: unknown name (the message lists the known ones). TypeError: unknown override field.
    """
    key = str(name).lower()
    if key not in READERS:
        raise GroundTruthError(f"unknown ground-truth format '{name}'; known formats: {', '.join(sorted(READERS))}")
    reader = READERS[key]
    return replace(reader, **overrides) if overrides else reader
