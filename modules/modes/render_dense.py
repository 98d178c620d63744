"""mode=render_dense: dense mesh files (PLY, OBJ+MTL, GLB, FBX) and, when enabled, splats, a cleaned point cloud and
preview renders, from a panorama (the tangent pipeline runs first) or from an earlier run directory (its
distance.npy)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..dataset.io import load_panorama
from ..device import configure_runtime
from ..export.dense import export_dense_assets
from ..fusion.scale import Scale
from ..export.run_dir import load_run_distance
from ..export.outputs import write_meta, write_panorama_outputs
from ..pipeline import build_pipeline

log = logging.getLogger(__name__)


def dense_options(cfg: DictConfig) -> dict:
    """The export.dense groups as plain dicts (and export.axes) for :func:`export_dense_assets`."""
    d = OmegaConf.to_container(cfg.export.dense, resolve=True)
    return {**{k: d[k] for k in ("mesh", "files", "splats", "point_cloud", "previews")}, "axes": cfg.export.axes,
            "sky_dome": d.get("sky_dome")}


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    out_dir = Path(cfg.paths.output_dir)
    if cfg.mode.run_dir:
        src = load_run_distance(cfg.mode.run_dir)
        # an earlier run is already scaled: keep it unless a camera height or factor is given now
        scale = instantiate(cfg.scale, _convert_="all", relative="keep")
        start = time.perf_counter()
        result = export_dense_assets(src.distance, src.rgb, out_dir, src.confidence, scale=scale,
                                     **dense_options(cfg))
        write_meta(out_dir, cfg,
                   input={"run_dir": str(cfg.mode.run_dir), "image_path": src.meta.get("input", {}).get("image_path"),
                          "invalid_pixels": src.num_invalid},
                   timings={"dense_export": time.perf_counter() - start}, scale=result.scale.info,
                   predictor=src.meta.get("predictor"),
                   dense={"files": {k: v.name for k, v in result.files.items()}, **result.stats})
    else:
        image_path = str(cfg.dataset.image_path)
        rgb = load_panorama(image_path, min_height=cfg.dataset.min_height)
        pipeline = build_pipeline(cfg)
        res = pipeline.run(rgb, image_path)
        start = time.perf_counter()
        result = export_dense_assets(res.distance.cpu(), rgb, out_dir, res.confidence.cpu(),
                                     scale=Scale(relative="keep"), **dense_options(cfg))  # the pipeline scaled it
        res.timings["dense_export"] = time.perf_counter() - start
        write_panorama_outputs(out_dir, rgb, res, cfg, image_path, {
            "predictor": pipeline.predictor.describe(),
            "dense": {"files": {k: v.name for k, v in result.files.items()}, **result.stats},
        })
    log.info("wrote %s", ", ".join(sorted(p.name for p in result.files.values())))
    return 0
