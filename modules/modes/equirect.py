"""mode=equirect: one predictor pass over the whole panorama (the baseline the tangent pipeline must beat); the same
outputs as mode=predict, through the same batch runner (one image, or a folder / glob / list; summary.json,
completion marker, resume): the job is :data:`modules.runtime.jobs.JOBS` ``["equirect"]``."""

from __future__ import annotations

from omegaconf import DictConfig

from .batch import run as run_batch


def run(cfg: DictConfig) -> int:
    return run_batch(cfg)
