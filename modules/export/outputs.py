"""A panorama run's files: distance.npy, distance.png, distance_preview.png, confidence.npy, pointcloud.ply, meta.json.

:func:`write_panorama_outputs` is the one writer of a panorama's outputs (the worker for mode=predict, batch and Ray;
mode=equirect; mode=render_dense); :func:`write_meta` is the one meta.json writer, used by every mode.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..config import to_container
from ..pipeline import PipelineResult
from .atomic import write_json
from .maps import write_surface_maps
from .depth_files import write_distance_png, write_npy, write_preview, write_sky_mask
from .pointcloud import erp_points, write_point_cloud_ply

__all__ = ["write_panorama_outputs", "write_meta", "faces_meta", "COMMON_META_KEYS"]

#: keys every mode's meta.json has
COMMON_META_KEYS = ("input", "outputs", "scale", "predictor", "timings", "machine", "config")


#: panoramas up to this many pixels have their files written side by side; larger ones one file after the other,
#: so that the writers' buffers never add up (the size guard's memory model, modules/dataset/size_guard.py, holds)
PARALLEL_WRITE_MAX_PIXELS = 2896 * 1448


def _writer_threads(pixels: int) -> int:
    """Threads that encode a panorama's files side by side: one per CPU core, at most 4 (1 above
    :data:`PARALLEL_WRITE_MAX_PIXELS`)."""
    return max(1, min(4, os.cpu_count() or 1)) if pixels <= PARALLEL_WRITE_MAX_PIXELS else 1


def faces_meta(result: PipelineResult) -> dict[str, Any]:
    """meta.json's ``faces``: how many faces the run predicted, and the outdoor pass if it ran (its first pass's sky
    share and the rotated copies; :meth:`modules.pipeline.PanoramaPipeline.run`), else None."""
    return {"count": result.info.get("num_faces"), "outdoor_pass": result.info.get("outdoor_pass")}


def write_panorama_outputs(
    out_dir: Path, rgb: torch.Tensor, result: PipelineResult, cfg: DictConfig, image_path: str | None,
    extra: dict | None = None, input_info: dict | None = None,
) -> dict[str, Any]:
    """Write distance.npy, distance.png, distance_preview.png, confidence.npy, the maps of ``export.maps``
    (distance.exr, points.exr, normal.png, normal.exr, mask.png), sky_mask.png, pointcloud.ply and, last, meta.json.

    ``input_info``: what reading the input did (:func:`modules.dataset.io.read_image`'s conversions, the size
    guard's decision), merged into meta.json's ``input``.

    Returns the meta dictionary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = cfg.export
    start = time.perf_counter()
    distance = result.distance.cpu()
    confidence = result.confidence.cpu()
    # the files are independent: encoded and written side by side (zlib, the EXR encoder and file I/O run outside
    # Python's lock); each is still written atomically, and meta.json (listing them) only after all of them
    with ThreadPoolExecutor(max_workers=_writer_threads(distance.numel())) as pool:
        png = pool.submit(write_distance_png, out_dir / "distance.png", distance, ex.distance_png.unit,
                          ex.png_compress_level)
        jobs = [
            pool.submit(write_npy, out_dir / "distance.npy", distance),
            pool.submit(write_preview, out_dir / "distance_preview.png", distance, ex.preview.colormap,
                        tuple(ex.preview.percentiles), ex.png_compress_level),
            pool.submit(write_npy, out_dir / "confidence.npy", confidence),
            pool.submit(write_sky_mask, out_dir / "sky_mask.png", distance, ex.png_compress_level),
        ]
        if ex.pointcloud.enabled:
            def pointcloud() -> None:
                points, colours = erp_points(distance, rgb.cpu(), stride=int(ex.pointcloud.stride))
                write_point_cloud_ply(out_dir / "pointcloud.ply", points, colours, axes=ex.axes)
            jobs.append(pool.submit(pointcloud))
        write_surface_maps(out_dir, distance, tuple(ex.maps), ex.png_compress_level, pool=pool)
        png = png.result()
        for job in jobs:
            job.result()  # re-raises a writer's error
    timings = dict(result.timings)
    timings["writing"] = time.perf_counter() - start
    sections = {"distance_png": png, "alignment": result.info.get("alignment"), "faces": faces_meta(result),
                **(extra or {})}
    return write_meta(out_dir, cfg, input={"image_path": image_path, "height": int(rgb.shape[1]),
                                           "width": int(rgb.shape[2]), **(input_info or {})},
                      timings=timings, scale=result.info.get("scale"), **sections)


def write_meta(out_dir: Path, cfg: DictConfig, *, input: dict, timings: dict[str, float], scale: dict | None = None,
               predictor: dict | None = None, **sections: Any) -> dict[str, Any]:
    """The one meta.json writer, used by every mode; written last, after the files it lists.

    Common keys (:data:`COMMON_META_KEYS`): ``input`` (what was read), ``outputs`` (the files in ``out_dir``),
    ``scale`` (units and how they were found), ``predictor`` (its description; None when no network ran),
    ``timings`` (``network``, ``non_network`` per stage, ``non_network_total``), ``machine``, ``config``; then the
    mode's own ``sections`` (a section may override ``predictor``).

    Args:
        timings: seconds per stage; the ``network`` entry is split off from the rest.
    Returns:
        the meta dictionary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = dict(timings)
    network = timings.pop("network", 0.0)
    meta = {
        "input": input,
        "outputs": sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                          and p.name != "meta.json")
        + ["meta.json"],
        "scale": scale,
        "predictor": predictor,
        "timings": {"network": network, "non_network": timings, "non_network_total": sum(timings.values())},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "device": cfg.runtime.device},
        "config": to_container(cfg),
        **sections,
    }
    write_json(out_dir / "meta.json", meta)
    return meta
