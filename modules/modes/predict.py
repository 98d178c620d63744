"""mode=predict: panoramas -> distance, confidence, point cloud and meta.json.

``dataset.image_path`` is one panorama (files straight into the run folder) or a folder / glob / list of them (one
sub-folder each); both run through :mod:`modules.modes.batch` (resume, failure isolation, summary.json, Ray).
"""

from __future__ import annotations

from omegaconf import DictConfig

from .batch import run as run_batch


def run(cfg: DictConfig) -> int:
    return run_batch(cfg)
