"""mode=eval: a dataset of (rgb, ground truth) pairs -> per_image.csv and summary.json of the standard metrics.

The prediction is the distance of the pipeline ``mode.pipeline`` builds (``_target_``: the tangent pipeline,
:func:`modules.pipeline.build_pipeline`, or the one-pass baseline, :func:`modules.pipeline.build_equirect`); it is
aligned to the ground truth (``mode.alignment``) before scoring.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..config import to_container
from ..dataset.io import load_panorama
from ..device import configure_runtime
from ..errors import UserError
from ..evaluation.dataset import list_eval_pairs
from ..evaluation.evaluate import evaluate_pairs
from ..evaluation.readers import get_reader
from ..predictor_cache import predictor_from_config
from ..evaluation.report import (
    summarize_metrics,
    write_per_image_csv,
    write_summary_json,
)
from ..export.outputs import write_meta

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    configure_runtime(cfg)
    e = cfg.mode
    if e.dataset is None:
        raise UserError("mode=eval needs mode.dataset=<folder or list file>")
    naming = OmegaConf.to_container(e.naming, resolve=True)
    pairs = list_eval_pairs(e.dataset, **naming)
    predictor = predictor_from_config(cfg.predictor, cfg.scale.method)  # loaded once for the whole dataset
    pipeline = instantiate(e.pipeline)(cfg, predictor)

    timings: dict[str, float] = {}

    def predict(pair):
        rgb = load_panorama(pair.rgb, min_height=cfg.dataset.min_height)
        result = pipeline.run(rgb, str(pair.rgb))
        for stage, seconds in result.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        return result.distance

    reader_overrides = {} if e.gt_quantity is None else {"quantity": e.gt_quantity}
    rows = evaluate_pairs(
        pairs, predict, get_reader(e.gt_format, **reader_overrides), erp=True, record_failures=True, progress=True,
        alignment=e.alignment, lat_band=None if e.lat_band is None else tuple(e.lat_band), weighting=e.weighting,
        depth_range=None if e.depth_range is None else tuple(e.depth_range), delta_base=e.delta_base,
    )
    out = Path(cfg.paths.output_dir)
    write_per_image_csv(out / "per_image.csv", rows)
    summary = {**summarize_metrics(rows), "settings": to_container(e), "predictor": predictor.describe()}
    sky_rows = [r for r in rows if "sky_recall" in r]
    if sky_rows:  # ground truth with sky (+inf): how well the sky was found (distances above are surfaces only)
        summary["sky"] = {k: summarize_metrics(sky_rows, (k,))["metrics"][k]
                          for k in ("sky_precision", "sky_recall", "surface_as_sky")}
    write_summary_json(out / "summary.json", summary)
    failed = [r for r in rows if "error" in r]
    write_meta(out, cfg, input={"dataset": str(e.dataset), "images": len(rows)}, timings=timings,
               predictor=predictor.describe(), eval={"pipeline": str(e.pipeline._target_), "failed": len(failed)})
    for r in failed:
        log.error("%s", r["error"])
    m = summary["metrics"]
    log.info("%d images: AbsRel %.4f, delta1 %.4f (%d failed)", len(rows), m.get("abs_rel", float("nan")),
             m.get("delta1", float("nan")), len(failed))
    return 1 if failed else 0
