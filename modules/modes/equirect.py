"""mode=equirect: one predictor pass over the whole panorama (the baseline the tangent pipeline must beat); the same
outputs as mode=predict."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..dataset.io import load_panorama
from ..pipeline import EquirectPipeline
from ..predictor_cache import predictor_from_config
from .common import configure_runtime, write_panorama_outputs


def build_equirect(cfg: DictConfig, predictor=None) -> EquirectPipeline:
    return EquirectPipeline(
        predictor if predictor is not None else predictor_from_config(cfg.predictor, cfg.scale.method),
        pad_fraction=cfg.mode.pad_fraction,
        device=cfg.runtime.device,
        scale=OmegaConf.to_container(cfg.scale, resolve=True),
        fill_iterations=cfg.fusion.blender.fill_iterations,
        preprocess=instantiate(cfg.preprocess, _convert_="all"),
    )


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    image_path = str(cfg.dataset.image_path)
    rgb = load_panorama(image_path, min_height=cfg.dataset.min_height)
    pipeline = build_equirect(cfg)
    result = pipeline.run(rgb, image_path)
    write_panorama_outputs(Path(cfg.paths.output_dir), rgb, result, cfg, image_path,
                           {"predictor": pipeline.predictor.describe(), "method": "equirect"})
    return 0
