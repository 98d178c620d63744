"""mode=eval: a dataset of (rgb, ground truth) pairs -> per_image.csv and summary.json of the standard metrics.

Two steps. Predict: every pair's image runs through the batch runner (:func:`modules.modes.batch.run_batch`, the job
:mod:`modules.runtime.eval_job`) like any panorama mode: one folder per image in ``batch.output_dir`` (distance.npy,
meta.json, completion marker), the batch's summary.json there, runtime=local or ray, the size guard, one bad image
failing its pair only, and with ``batch.skip_existing`` a resume predicts only the pairs without finished outputs
(the fingerprint includes the paired ground-truth file). Score: the committed distance.npy of every pair is aligned
to its ground truth (``mode.alignment``) and scored; per_image.csv, summary.json (metrics, and the batch counts under
``batch``) and meta.json go to the run folder ``paths.output_dir`` (when that is ``batch.output_dir`` too, the
metrics summary.json replaces the batch's, keeping it under ``batch``). A pair whose prediction failed gets a row with
its error (exit 1); the others are scored.

The prediction is the distance of the pipeline ``mode.pipeline`` builds (``_target_``: the tangent pipeline,
:func:`modules.pipeline.build_pipeline`, or the one-pass baseline, :func:`modules.pipeline.build_equirect`).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..config import to_container
from ..dataset.listing import InputListing
from ..errors import UserError
from ..evaluation.evaluate import evaluate_pairs
from ..evaluation.report import summarize_metrics, write_per_image_csv, write_summary_json
from ..export.outputs import write_meta
from ..runtime import remote
from ..runtime.eval_job import eval_pairs, ground_truth_reader
from ..runtime.fingerprint import input_fingerprint, panorama_fingerprint
from ..runtime.worker import OK, SKIPPED
from .batch import run_batch

log = logging.getLogger(__name__)


def _read(output_dir: str, name: str) -> bytes:
    """A committed output file of a pair (its folder a local path or a URI)."""
    if remote.is_uri(output_dir):
        return remote.read_bytes(remote.join(output_dir, name))
    return (Path(remote.local_path(output_dir)) / name).read_bytes()


def run(cfg: DictConfig) -> int:
    e = cfg.mode
    if e.dataset is None:
        raise UserError("mode=eval needs mode.dataset=<folder or list file>")
    pairs = eval_pairs(cfg)
    gt_of = {str(Path(p.rgb).absolute()): p.gt for p in pairs}

    def with_ground_truth(tasks):  # a changed ground truth file changes the prediction (synthetic predictor)
        method = str(cfg.batch.fingerprint.input)
        return [replace(t, fingerprint=panorama_fingerprint({"task": t.fingerprint},
                                                            input_fingerprint(gt_of[t.image_path], method)))
                for t in tasks]

    listing = InputListing(tuple(Path(p.rgb) for p in pairs), single=False, source=str(e.dataset))
    batch = run_batch(cfg, listing, with_ground_truth)
    done = {r["image_path"]: r for r in batch["panoramas"]}

    timings: dict[str, float] = {}
    predictors: list = []

    def predict(pair):
        r = done[str(Path(pair.rgb).absolute())]
        if r["status"] not in (OK, SKIPPED):
            raise UserError(r["reason"] or f"{pair.rgb}: not predicted ({r['status']})")
        meta = json.loads(_read(r["output_dir"], "meta.json"))
        for stage, seconds in meta["timings"].get("non_network", {}).items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        timings["network"] = timings.get("network", 0.0) + meta["timings"].get("network", 0.0)
        predictors.append(meta.get("predictor"))
        return torch.from_numpy(np.load(io.BytesIO(_read(r["output_dir"], "distance.npy"))))

    rows = evaluate_pairs(
        pairs, predict, ground_truth_reader(cfg), erp=True, record_failures=True, progress=bool(cfg.batch.progress),
        alignment=e.alignment, lat_band=None if e.lat_band is None else tuple(e.lat_band), weighting=e.weighting,
        depth_range=None if e.depth_range is None else tuple(e.depth_range), delta_base=e.delta_base,
    )
    out = Path(cfg.paths.output_dir)
    predictor = next((p for p in predictors if p), None)
    write_per_image_csv(out / "per_image.csv", rows)
    counts = {k: batch[k] for k in ("output_dir", "total", "succeeded", "skipped", "failed", "not_run", "interrupted")}
    summary = {**summarize_metrics(rows), "settings": to_container(e), "predictor": predictor, "batch": counts}
    sky_rows = [r for r in rows if "sky_recall" in r]
    if sky_rows:  # ground truth with sky (+inf): how well the sky was found (distances above are surfaces only)
        summary["sky"] = {k: summarize_metrics(sky_rows, (k,))["metrics"][k]
                          for k in ("sky_precision", "sky_recall", "surface_as_sky")}
    if Path(str(batch["output_dir"])) == out.absolute():
        summary["batch"] = {k: v for k, v in batch.items()}  # the batch's summary.json is replaced by this one
    write_summary_json(out / "summary.json", summary)
    failed = [r for r in rows if "error" in r]
    write_meta(out, cfg, input={"dataset": str(e.dataset), "images": len(rows)}, timings=timings,
               predictor=predictor, eval={"pipeline": str(e.pipeline._target_), "failed": len(failed),
                                          "predictions": str(batch["output_dir"])})
    for r in failed:
        log.error("%s", r["error"])
    print(f"outputs: {out}", flush=True)
    m = summary["metrics"]
    log.info("%d images: AbsRel %.4f, delta1 %.4f (%d failed)", len(rows), m.get("abs_rel", float("nan")),
             m.get("delta1", float("nan")), len(failed))
    if batch["interrupted"]:
        return batch["exit_code"]
    return 1 if failed else 0
