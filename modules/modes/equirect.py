"""mode=equirect: one predictor pass over the whole panorama (the baseline the tangent pipeline must beat); the same
outputs as mode=predict."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..dataset.io import load_panorama
from ..device import configure_runtime
from ..export.outputs import write_panorama_outputs
from ..pipeline import build_equirect


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    image_path = str(cfg.dataset.image_path)
    rgb = load_panorama(image_path, min_height=cfg.dataset.min_height)
    pipeline = build_equirect(cfg, pad_fraction=cfg.mode.pad_fraction, fill_iterations=cfg.mode.fill_iterations)
    result = pipeline.run(rgb, image_path)
    write_panorama_outputs(Path(cfg.paths.output_dir), rgb, result, cfg, image_path,
                           {"predictor": pipeline.predictor.describe(), "method": "equirect"})
    return 0
