"""mode=eval: a dataset of (rgb, ground truth) pairs -> per_image.csv and summary.json of the standard metrics.

The prediction is the distance of the pipeline ``mode.pipeline`` builds (``_target_``: the tangent pipeline,
:func:`modules.pipeline.build_pipeline`, or the one-pass baseline, :func:`modules.pipeline.build_equirect`); it is
aligned to the ground truth (``mode.alignment``) before scoring.

Each image passes the size guard (:mod:`modules.dataset.size_guard`); an image or ground truth that cannot be used
fails that pair only (a row with its error, exit 1), the others are scored. The ground truth paired with an image is
handed to the predictor (:meth:`~modules.geo_predictors.base.DepthPredictor.use_ground_truth`), so the synthetic
predictor works on every dataset layout (flat folders included), not only scene folders with a distance.npy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..config import to_container
from ..dataset.io import load_panorama
from ..dataset.size_guard import check_settings, check_size
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
    check_settings(cfg)
    naming = OmegaConf.to_container(e.naming, resolve=True)
    pairs = list_eval_pairs(e.dataset, **naming)
    predictor = predictor_from_config(cfg.predictor, cfg.scale.method)  # loaded once for the whole dataset
    pipeline = instantiate(e.pipeline)(cfg, predictor)

    timings: dict[str, float] = {}
    reader = get_reader(e.gt_format, **({} if e.gt_quantity is None else {"quantity": e.gt_quantity}))
    paired: dict = {}

    def read_gt(path):  # evaluate_pairs reads a pair's ground truth before predicting it: keep it for predict()
        paired["gt"], paired["path"] = reader(path), path
        return paired["gt"]

    def predict(pair):
        decision = check_size(cfg, pair.rgb)  # header only: refuse (this pair fails) or the height to decode at
        rgb = load_panorama(pair.rgb, min_height=cfg.dataset.min_height, max_height=decision.target_height)
        gt = paired.get("gt")
        if gt is not None and paired["path"] == pair.gt and gt.quantity == "distance":
            sky = gt.sky if gt.sky is not None else torch.zeros_like(gt.valid)
            distance = torch.where(gt.valid, gt.values, torch.where(sky, torch.inf, torch.nan))
            predictor.use_ground_truth(str(pair.rgb), distance, str(pair.gt))  # the synthetic predictor renders it
        result = pipeline.run(rgb, str(pair.rgb))
        for stage, seconds in result.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        return result.distance

    rows = evaluate_pairs(
        pairs, predict, read_gt, erp=True, record_failures=True, progress=True,
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
    print(f"outputs: {out}", flush=True)
    m = summary["metrics"]
    log.info("%d images: AbsRel %.4f, delta1 %.4f (%d failed)", len(rows), m.get("abs_rel", float("nan")),
             m.get("delta1", float("nan")), len(failed))
    return 1 if failed else 0
