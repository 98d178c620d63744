"""mode=video: an equirect clip -> per-frame distance consistent over time (see :mod:`modules.runtime.video`)."""

from __future__ import annotations

from omegaconf import DictConfig

from ..runtime.video import run_video
from ..device import configure_runtime


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    return run_video(cfg)
