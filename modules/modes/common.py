"""Pieces every mode shares: building the pipeline from config and writing a run's outputs."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..config import to_container
from ..export.depth_files import write_distance_png, write_json, write_npy, write_preview, write_sky_mask
from ..export.maps import write_surface_maps
from ..export.pointcloud import erp_points, write_point_cloud_ply
from ..pipeline import PanoramaPipeline, PipelineResult
from ..predictor_cache import predictor_from_config

__all__ = ["build_pipeline", "write_panorama_outputs", "configure_runtime"]

log = logging.getLogger(__name__)


def configure_runtime(cfg: DictConfig) -> None:
    """Apply the runtime group: CPU threads."""
    if cfg.runtime.num_threads:
        torch.set_num_threads(int(cfg.runtime.num_threads))


def build_pipeline(cfg: DictConfig, predictor=None) -> PanoramaPipeline:
    """Instantiate every stage from its config group (``_target_``); ``predictor`` may be passed in to reuse a
    loaded model across panoramas."""
    return PanoramaPipeline(
        projection=instantiate(cfg.projection),
        predictor=predictor if predictor is not None else predictor_from_config(cfg.predictor, cfg.scale.method),
        alignment=instantiate(cfg.alignment),
        blender=instantiate(cfg.fusion.blender),
        refinement=instantiate(cfg.refinement),
        refine_height=cfg.fusion.refine_height,
        device=cfg.runtime.device,
        scale=OmegaConf.to_container(cfg.scale, resolve=True),
        preprocess=instantiate(cfg.preprocess, _convert_="all"),
        sky=instantiate(cfg.fusion.sky),
    )


def write_panorama_outputs(
    out_dir: Path, rgb: torch.Tensor, result: PipelineResult, cfg: DictConfig, image_path: str | None, extra: dict | None = None
) -> dict[str, Any]:
    """Write distance.npy, distance.png, distance_preview.png, confidence.npy, the maps of ``export.maps``
    (distance.exr, points.exr, normal.png, normal.exr, mask.png), sky_mask.png, pointcloud.ply and, last, meta.json.

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
    write_surface_maps(out_dir, distance, tuple(ex.maps), ex.png_compress_level)
    write_sky_mask(out_dir / "sky_mask.png", distance, ex.png_compress_level)
    if ex.pointcloud.enabled:
        points, colours = erp_points(distance, rgb.cpu(), stride=int(ex.pointcloud.stride))
        write_point_cloud_ply(out_dir / "pointcloud.ply", points, colours, axes=ex.axes)
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
