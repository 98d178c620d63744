"""Per-pixel maps next to distance.npy: distance.exr, points.exr, normal.png / normal.exr and mask.png.

* ``distance.exr``: float32, one channel ``Y`` (what EXR viewers show as grey): the distance along each ray, in the
  run's units (metres when a metric scale was found); invalid pixels (sky: +inf, or no estimate: NaN) keep their value.
* ``points.exr``: float32 channels ``R G B`` = X Y Z of each pixel's point, OpenCV axes (x right, y down, z forward,
  camera at the origin), NaN where invalid.
* ``normal.exr``: half-float ``R G B`` = the unit surface normal (OpenCV axes, facing the camera; from the distance map
  on the sphere, :func:`modules.geometry.erp_normals.erp_normals`), NaN where undefined. Half, as Blender writes its
  EXR passes by default: each component within 5e-4 (< 0.05 degrees), and at 2048x1024 a third of the float32 file
  (7 MB instead of 19 MB) in less than half the encoding time.
* ``normal.png``: 8-bit RGB ``(n + 1) / 2 * 255`` of the same normals (x right -> red, y down -> green, z forward ->
  blue); (0, 0, 0) where undefined (it decodes to a non-unit vector).
* ``mask.png``: 8-bit grey, 255 where the pixel has a valid surface distance, 0 elsewhere (sky, invalid).

EXR files use ZIP compression; all go through :func:`modules.export.atomic.atomic_path`.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..extras import available, missing_message
from ..geometry.erp_normals import erp_normals
from ..geometry.spherical import erp_directions
from .atomic import atomic_path

__all__ = ["MAP_NAMES", "write_exr", "write_surface_maps"]

log = logging.getLogger(__name__)

MAP_NAMES = ("distance_exr", "points_exr", "normal_png", "normal_exr", "mask_png")


def write_exr(path: str | os.PathLike, channels: dict[str, np.ndarray], dtype: type = np.float32) -> Path:
    """Write [H, W] channels to a ZIP-compressed scanline OpenEXR file, stored as ``dtype`` (np.float32 or
    np.float16)."""
    import OpenEXR

    path = Path(path)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"{path}: EXR channels are written as float32 or float16, not {dtype}")
    data = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in channels.items()}
    shapes = {v.shape for v in data.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{path}: EXR channels must be [H, W] arrays of one shape, got {sorted(shapes)}")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp, OpenEXR.File(header, data) as f:
        f.write(str(tmp))
    return path


def _png(path: Path, array: np.ndarray, compress_level: int) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=int(compress_level))
    return path


def write_surface_maps(
    out_dir: str | os.PathLike,
    distance: Tensor,
    maps: tuple[str, ...] = MAP_NAMES,
    png_compress_level: int = 1,
    pool: Executor | None = None,
) -> dict[str, Path]:
    """Write the chosen maps (names in :data:`MAP_NAMES`) for an ERP distance map [H, W]; returns {name: path}.
    Without OpenEXR (the ``eval`` extra) the EXR maps are skipped with a warning naming the extra.

    ``pool``: an executor the files are encoded and written in, side by side (zlib and the EXR encoder run outside
    Python's lock); None: one after the other. Either way every file is complete when this returns."""
    unknown = sorted(set(maps) - set(MAP_NAMES))
    if unknown:
        raise ValueError(f"unknown map(s) {unknown}; expected some of {MAP_NAMES}")
    if any(m.endswith("_exr") for m in maps) and not available("OpenEXR"):
        skipped = [m for m in maps if m.endswith("_exr")]
        log.warning("%s skipped: %s", ", ".join(skipped), missing_message("EXR maps", "OpenEXR"))
        maps = tuple(m for m in maps if not m.endswith("_exr"))
    out_dir = Path(out_dir)
    d = distance.detach()
    valid = torch.isfinite(d) & (d > 0)
    jobs: dict[str, Callable[[], Path]] = {}
    if "distance_exr" in maps:
        jobs["distance_exr"] = lambda: write_exr(out_dir / "distance.exr", {"Y": d.cpu().numpy()})
    if "points_exr" in maps:
        def points() -> Path:
            dv = torch.where(valid, d, torch.full_like(d, float("nan")))
            # channel planes [3, H, W] (contiguous, as the EXR writer wants them): direction x distance
            p = (erp_directions(*d.shape, d.device, d.dtype).permute(2, 0, 1) * dv).cpu().numpy()
            return write_exr(out_dir / "points.exr", {"R": p[0], "G": p[1], "B": p[2]})
        jobs["points_exr"] = points
    if "mask_png" in maps:
        jobs["mask_png"] = lambda: _png(out_dir / "mask.png", valid.cpu().numpy().astype(np.uint8) * 255,
                                        png_compress_level)
    written: dict[str, Path] = {}
    futures = {name: pool.submit(job) for name, job in jobs.items()} if pool is not None else {}
    if "normal_png" in maps or "normal_exr" in maps:
        n = erp_normals(d).cpu().numpy()  # [3, H, W]
        normal_jobs: dict[str, Callable[[], Path]] = {}
        if "normal_exr" in maps:
            normal_jobs["normal_exr"] = lambda: write_exr(out_dir / "normal.exr", {"R": n[0], "G": n[1], "B": n[2]},
                                                            np.float16)
        if "normal_png" in maps:
            def normal_png() -> Path:
                # (n + 1) 127.5 + 0.5, 0 where undefined, clipped to bytes: in place in one float buffer
                v = n + 1.0
                v *= 127.5
                v += 0.5
                np.copyto(v, 0.0, where=~np.isfinite(n))
                np.clip(v, 0, 255, out=v)
                return _png(out_dir / "normal.png", v.astype(np.uint8).transpose(1, 2, 0), png_compress_level)
            normal_jobs["normal_png"] = normal_png
        if pool is not None:
            futures.update({name: pool.submit(job) for name, job in normal_jobs.items()})
        else:
            jobs.update(normal_jobs)
    for name in MAP_NAMES:  # the usual order of the results
        if name in futures:
            written[name] = futures[name].result()
        elif name in jobs:
            written[name] = jobs[name]()
    return written
