"""mode=predict: one panorama -> distance, confidence, point cloud and meta.json in the run directory."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..dataset.io import load_panorama
from .common import build_pipeline, configure_runtime, write_panorama_outputs

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    image_path = str(cfg.dataset.image_path)
    rgb = load_panorama(image_path, min_height=cfg.dataset.min_height)
    pipeline = build_pipeline(cfg)
    result = pipeline.run(rgb, image_path)
    out_dir = Path(cfg.paths.output_dir)
    meta = write_panorama_outputs(out_dir, rgb, result, cfg, image_path, {"predictor": pipeline.predictor.describe()})
    t = meta["timings"]
    log.info("wrote %s (network %.2f s, other stages %.2f s)", out_dir, t["network"], t["non_network_total"])
    return 0
