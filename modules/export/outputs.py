"""A panorama run's files: distance.npy, distance.png, distance_preview.png, confidence.npy, pointcloud.ply, meta.json.

The one writer of a panorama's outputs; the worker (mode=predict, batch, Ray), mode=equirect and mode=render_dense
call it.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..config import to_container
from ..pipeline import PipelineResult
from .depth_files import write_distance_png, write_json, write_npy, write_preview
from .pointcloud import erp_points, write_point_cloud_ply

__all__ = ["write_panorama_outputs"]


def write_panorama_outputs(
    out_dir: Path, rgb: torch.Tensor, result: PipelineResult, cfg: DictConfig, image_path: str | None, extra: dict | None = None
) -> dict[str, Any]:
    """Write distance.npy, distance.png, distance_preview.png, confidence.npy, pointcloud.ply and, last, meta.json.

    Returns the meta dictionary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = cfg.export
    start = time.perf_counter()
    distance = result.distance.cpu()
    write_npy(out_dir / "distance.npy", distance)
    png = write_distance_png(out_dir / "distance.png", distance, ex.distance_png.unit, ex.png_compress_level)
    write_preview(out_dir / "distance_preview.png", distance, ex.preview.colormap, tuple(ex.preview.percentiles),
                  ex.png_compress_level)
    write_npy(out_dir / "confidence.npy", result.confidence.cpu())
    if ex.pointcloud.enabled:
        points, colours = erp_points(distance, rgb.cpu(), stride=int(ex.pointcloud.stride))
        write_point_cloud_ply(out_dir / "pointcloud.ply", points, colours)
    timings = dict(result.timings)
    timings["writing"] = time.perf_counter() - start
    network = timings.pop("network", 0.0)
    meta = {
        "input": {"image_path": image_path, "height": int(rgb.shape[1]), "width": int(rgb.shape[2])},
        "outputs": sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) + ["meta.json"],
        "distance_png": png,
        "scale": result.info.get("scale"),
        "predictor": None,
        "alignment": result.info.get("alignment"),
        "timings": {
            "network": network,
            "non_network": timings,
            "non_network_total": sum(timings.values()),
        },
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "device": cfg.runtime.device},
        "config": to_container(cfg),
    }
    if extra:
        meta.update(extra)
    write_json(out_dir / "meta.json", meta)
    return meta
