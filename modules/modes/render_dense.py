"""mode=render_dense: dense mesh files (PLY, OBJ+MTL, GLB, FBX) and, when enabled, splats, a cleaned point cloud and
preview renders, from panoramas (the tangent pipeline runs first; one image or a folder / glob / list through the
batch runner, job :data:`modules.runtime.jobs.JOBS` ``["render_dense"]``) or from an earlier run directory (its
distance.npy, ``mode.run_dir``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from ..device import configure_runtime
from ..export.dense import export_dense_assets
from ..export.outputs import write_meta
from ..export.run_dir import load_run_distance
from ..runtime.jobs import dense_options
from .batch import run as run_batch

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    if not cfg.mode.run_dir:
        return run_batch(cfg)
    configure_runtime(cfg)
    out_dir = Path(cfg.paths.output_dir)
    src = load_run_distance(cfg.mode.run_dir)
    # an earlier run is already scaled: keep it unless a camera height or factor is given now
    scale = instantiate(cfg.scale, _convert_="all", relative="keep")
    start = time.perf_counter()
    result = export_dense_assets(src.distance, src.rgb, out_dir, src.confidence, scale=scale, **dense_options(cfg))
    write_meta(out_dir, cfg,
               input={"run_dir": str(cfg.mode.run_dir), "image_path": src.meta.get("input", {}).get("image_path"),
                      "invalid_pixels": src.num_invalid},
               timings={"dense_export": time.perf_counter() - start}, scale=result.scale.info,
               predictor=src.meta.get("predictor"),
               dense={"files": {k: v.name for k, v in result.files.items()}, **result.stats})
    log.info("wrote %s", ", ".join(sorted(p.name for p in result.files.values())))
    print(f"outputs: {out_dir}", flush=True)
    return 0
