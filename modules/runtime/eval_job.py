"""mode=eval's batch job: each (image, ground truth) pair's prediction, run by the batch runner like any panorama.

The pipeline is the one ``mode.pipeline`` builds (``_target_`` called as ``pipeline(cfg, predictor)``); before each
image it hands the ground truth eval paired with that image to the predictor
(:meth:`~modules.geo_predictors.base.DepthPredictor.use_ground_truth`), so the synthetic predictor works on every
dataset layout (flat folders included). The pairs are listed again from ``mode.dataset`` in the worker (the job is
built from the config alone, so it travels to Ray workers like the other jobs). The files are mode=predict's
(distance.npy, meta.json with ``eval.ground_truth``); the eval mode scores the committed distance.npy afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..evaluation.dataset import EvalPair, list_eval_pairs
from ..evaluation.readers import get_reader
from ..export.outputs import write_panorama_outputs

__all__ = ["EvalPipeline", "eval_pairs", "ground_truth_reader", "write_eval"]


def eval_pairs(cfg: DictConfig) -> list[EvalPair]:
    """The (image, ground truth) pairs of ``mode.dataset`` (``mode.naming``)."""
    naming = OmegaConf.to_container(cfg.mode.naming, resolve=True)
    return list_eval_pairs(cfg.mode.dataset, **naming)


def ground_truth_reader(cfg: DictConfig):
    """The reader of ``mode.gt_format`` (``mode.gt_quantity`` overriding the format's quantity when given)."""
    e = cfg.mode
    return get_reader(e.gt_format, **({} if e.gt_quantity is None else {"quantity": e.gt_quantity}))


def _key(path) -> str:
    return os.path.abspath(str(path))


#: (dataset, naming) -> {image path: ground truth path}: the dataset is listed once per process, not per image
_truth_cache: dict[str, dict[str, str]] = {}


def _truth(cfg: DictConfig, fresh: bool = False) -> dict[str, str]:
    """The pairing of ``cfg``'s dataset; ``fresh``: listed again (a worker's pipeline is built once per run)."""
    key = json.dumps([str(cfg.mode.dataset), OmegaConf.to_container(cfg.mode.naming, resolve=True)], sort_keys=True)
    if fresh or key not in _truth_cache:
        _truth_cache.clear()  # one dataset at a time
        _truth_cache[key] = {_key(p.rgb): str(p.gt) for p in eval_pairs(cfg)}
    return _truth_cache[key]


class EvalPipeline:
    """``mode.pipeline`` with the paired ground truth handed to the predictor before each image."""

    def __init__(self, cfg: DictConfig, predictor=None):
        from hydra.utils import instantiate

        self.pipeline = instantiate(cfg.mode.pipeline)(cfg, predictor)
        self.predictor = self.pipeline.predictor
        self.reader = ground_truth_reader(cfg)
        self.truth = {k: Path(v) for k, v in _truth(cfg, fresh=True).items()}

    def ground_truth(self, image_path: str) -> Path | None:
        return self.truth.get(_key(image_path))

    def run(self, rgb: torch.Tensor, image_path: str):
        gt_path = self.ground_truth(image_path)
        if gt_path is not None:
            gt = self.reader(gt_path)
            if gt.quantity == "distance":
                sky = gt.sky if gt.sky is not None else torch.zeros_like(gt.valid)
                distance = torch.where(gt.valid, gt.values, torch.where(sky, torch.inf, torch.nan))
                self.predictor.use_ground_truth(str(image_path), distance, str(gt_path))
        return self.pipeline.run(rgb, image_path)


def write_eval(out, rgb, result, cfg, image_path, extra, input_info):
    """mode=predict's files plus meta.json ``eval``: the pipeline and the ground truth paired with the image."""
    section = {"pipeline": str(cfg.mode.pipeline._target_), "ground_truth": _truth(cfg).get(_key(image_path))}
    return write_panorama_outputs(out, rgb, result, cfg, image_path, {**extra, "eval": section}, input_info)
