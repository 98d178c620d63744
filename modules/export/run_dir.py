"""The one reader of an earlier run directory (``mode=render_dense mode.run_dir=...``, ``mode=voxel mode.run_dir=...``).

A panorama run (mode=predict / equirect / render_dense) holds ``distance.npy`` [H, W]; a single_view run holds
``depth.npy`` [H, W] with its intrinsics in meta.json. Both may hold ``confidence.npy`` and ``meta.json`` whose
``input.image_path`` (absolute, or relative to the working directory or the run directory) gives the colours, read
with the project's one image reader (:func:`modules.dataset.io.load_image`) and resized to the map when needed.
Non-finite and non-positive values become NaN (invalid, dropped by the exporters) and are counted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..dataset.io import load_image
from ..errors import UserError
from ..geometry.erp_maps import InvalidDistanceError, check_distance_map, resize_map
from ..geometry.pinhole import PinholeIntrinsics

__all__ = ["RunDirectoryError", "RunOutputs", "read_run", "load_run_distance"]

log = logging.getLogger(__name__)

#: map file -> run kind
_MAPS = {"distance.npy": "panorama", "depth.npy": "single_view"}


class RunDirectoryError(UserError, FileNotFoundError):
    """A run directory that is missing or lacks the map it needs (distance.npy / depth.npy)."""


@dataclass(frozen=True)
class RunOutputs:
    """What :func:`read_run` found.

    Attributes:
        kind: "panorama" (``values`` is an ERP distance map) or "single_view" (``values`` is a depth map).
        values: [H, W] float32, invalid pixels NaN.
        rgb: [3, H, W] in [0, 1] or None; confidence: [H, W] or None; meta: the parsed meta.json ({} without one).
        num_invalid: invalid pixels of ``values``.
        intrinsics: the single view's camera (None for a panorama).
    """

    kind: str
    values: Tensor
    rgb: Tensor | None
    confidence: Tensor | None
    meta: dict
    num_invalid: int
    intrinsics: PinholeIntrinsics | None = None

    @property
    def distance(self) -> Tensor:
        if self.kind != "panorama":
            raise ValueError(f"a {self.kind} run holds depth, not an ERP distance map")
        return self.values


def _read_map(path: Path) -> tuple[Tensor, int]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InvalidDistanceError(f"{path}: not a readable .npy array ({e})") from e
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidDistanceError(f"{path}: expected a 2-D numeric [H, W] array, got shape {arr.shape} {arr.dtype}")
    values = torch.from_numpy(arr.astype(np.float32))
    valid = check_distance_map(values, name=str(path))
    num_invalid = int((~valid).sum())
    if num_invalid:
        log.warning("%s: %d of %d pixels are NaN, inf or <= 0; they are dropped", path, num_invalid, valid.numel())
        values = torch.where(valid, values, torch.full_like(values, float("nan")))
    return values, num_invalid


def _read_colours(image: str, run_dir: Path, size: tuple[int, int], erp: bool, meta_path: Path) -> Tensor | None:
    for cand in (Path(image), run_dir / image):
        if cand.is_file():
            try:
                rgb = load_image(cand)
            except UserError as e:
                log.warning("%s; exporting without colours", e)
                return None
            if tuple(rgb.shape[1:]) != size:
                rgb = torch.stack([resize_map(c, size, erp=erp) for c in rgb]).clamp(0, 1)
            return rgb
    log.warning("input image %s (from %s) not found; exporting without colours", image, meta_path)
    return None


def read_run(run_dir: str | os.PathLike, kinds: tuple[str, ...] = ("panorama", "single_view")) -> RunOutputs:
    """Read an earlier run directory of one of ``kinds``.

    Raises:
        RunDirectoryError: the directory is missing or holds none of the maps of ``kinds``.
        InvalidDistanceError: the map is not a 2-D numeric array or has no valid pixel.
        UserError: a single_view run without intrinsics in meta.json, or an unreadable meta.json.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir}: run directory does not exist")
    names = [name for name, kind in _MAPS.items() if kind in kinds]
    found = next((run_dir / n for n in names if (run_dir / n).is_file()), None)
    if found is None:
        wanted = " or ".join(names)
        modes = "predict" if kinds == ("panorama",) else "predict or single_view"
        raise RunDirectoryError(f"{run_dir}: no {wanted} in the run directory (is it the output of a {modes} run?)")
    kind = _MAPS[found.name]
    values, num_invalid = _read_map(found)
    meta: dict = {}
    meta_path = run_dir / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{meta_path}: invalid JSON ({e})") from e
    intrinsics = None
    if kind == "single_view":
        k = meta.get("intrinsics") if isinstance(meta, dict) else None
        if not k:
            raise UserError(f"{run_dir}: depth.npy without intrinsics in meta.json")
        intrinsics = PinholeIntrinsics(k["fx"], k["fy"], k["cx"], k["cy"], k["width"], k["height"],
                                       k.get("source", "meta"))
    confidence = None
    cpath = run_dir / "confidence.npy"
    if cpath.is_file():
        conf = np.load(cpath, allow_pickle=False)
        if tuple(conf.shape) == tuple(values.shape):
            confidence = torch.from_numpy(conf.astype(np.float32))
        else:
            log.warning("%s: shape %s differs from %s %s; ignored", cpath, conf.shape, found.name, tuple(values.shape))
    image = (meta.get("input") or {}).get("image_path") if isinstance(meta, dict) else None
    rgb = _read_colours(image, run_dir, tuple(values.shape), kind == "panorama", meta_path) if image else None
    return RunOutputs(kind, values, rgb, confidence, meta, num_invalid, intrinsics)


def load_run_distance(run_dir: str | os.PathLike) -> RunOutputs:
    """A panorama run directory (its ``distance.npy``); see :func:`read_run`."""
    return read_run(run_dir, kinds=("panorama",))
